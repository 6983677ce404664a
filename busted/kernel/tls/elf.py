"""A small reader for the 64-bit little-endian ELF files TLS stacks live in.

Every stack module needs the same few facts about a binary: its load segments (to turn
a virtual address into a file offset and back), its sections by name (``.rodata``,
``.text``, ``.gopclntab``, ``.eh_frame_hdr``), its function symbols when it has any, and
the bytes at an address. The file is mapped, not read: the binaries are large (node
~100 MB, Claude Code ~430 MB) and only small parts are looked at. ``struct`` only, no
bcc: this runs in doctor and unit tests without root.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

ET_EXEC = 2
PT_LOAD = 1
SHT_SYMTAB, SHT_DYNSYM = 2, 11
STT_FUNC = 2


class ElfError(ValueError):
    """The file is not a readable 64-bit little-endian ELF."""


@dataclass(frozen=True)
class Section:
    name: str
    addr: int  # virtual address (0 for sections not loaded)
    offset: int  # in the file
    size: int


@dataclass(frozen=True)
class ElfSymbols:
    """Function symbols of one ELF file and a reader for their code bytes."""

    path: str
    is_exec: bool  # ET_EXEC: bcc wants virtual addresses; ET_DYN: offsets from load base
    symbols: dict[str, int]  # name -> virtual address
    segments: tuple[tuple[int, int, int], ...]  # (vaddr, file offset, file size) of PT_LOAD

    def code(self, vaddr: int, size: int = 32) -> bytes:
        for seg_vaddr, seg_off, seg_size in self.segments:
            if seg_vaddr <= vaddr < seg_vaddr + seg_size:
                with open(self.path, "rb") as f:
                    f.seek(seg_off + vaddr - seg_vaddr)
                    return f.read(min(size, seg_vaddr + seg_size - vaddr))
        return b""

    def nearest_symbol_below(self, vaddr: int) -> tuple[str, int] | None:
        best: tuple[str, int] | None = None
        for name, addr in self.symbols.items():
            if addr <= vaddr and (best is None or addr > best[1]):
                best = (name, addr)
        return best


class ElfFile:
    """An open, mapped ELF file: segments, sections, bytes by address.

    Use as a context manager (``with ElfFile(path) as elf:``) so the mapping is closed.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        try:
            with open(self.path, "rb") as f:
                self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ElfError(f"{self.path}: {exc}") from exc
        try:
            self._parse_headers()
        except (struct.error, IndexError) as exc:
            self.close()
            raise ElfError(f"{self.path}: damaged ELF headers") from exc

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.data.closed:
            self.data.close()

    def _parse_headers(self) -> None:
        data = self.data
        if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ElfError(f"{self.path}: not a 64-bit little-endian ELF file")
        (self.e_type,) = struct.unpack_from("<H", data, 16)
        e_phoff, e_shoff = struct.unpack_from("<QQ", data, 32)
        e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = struct.unpack_from(
            "<HHHHH", data, 54)
        segments = []
        for i in range(e_phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
                "<IIQQQQ", data, e_phoff + i * e_phentsize)
            if p_type == PT_LOAD:
                segments.append((p_vaddr, p_offset, p_filesz))
        self.segments = tuple(segments)
        self.raw_sections = [
            struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
            for i in range(e_shnum)
        ] if e_shoff else []
        self.sections: dict[str, Section] = {}
        if self.raw_sections and e_shstrndx < len(self.raw_sections):
            names_off = self.raw_sections[e_shstrndx][4]
            for sh_name, _t, _f, sh_addr, sh_offset, sh_size, *_rest in self.raw_sections:
                end = data.find(b"\0", names_off + sh_name)
                name = data[names_off + sh_name:end].decode("ascii", "replace")
                self.sections.setdefault(name, Section(name, sh_addr, sh_offset, sh_size))

    @property
    def is_exec(self) -> bool:
        return self.e_type == ET_EXEC

    def offset_of(self, vaddr: int) -> int | None:
        """File offset of a virtual address, None if no segment holds it."""
        for seg_vaddr, seg_off, seg_size in self.segments:
            if seg_vaddr <= vaddr < seg_vaddr + seg_size:
                return seg_off + vaddr - seg_vaddr
        return None

    def vaddr_of(self, offset: int) -> int | None:
        """Virtual address of a file offset, None if it is not loaded."""
        for seg_vaddr, seg_off, seg_size in self.segments:
            if seg_off <= offset < seg_off + seg_size:
                return seg_vaddr + offset - seg_off
        return None

    def read(self, vaddr: int, size: int) -> bytes:
        off = self.offset_of(vaddr)
        if off is None:
            return b""
        return bytes(self.data[off:off + size])

    def section_bytes(self, name: str) -> memoryview | None:
        sec = self.sections.get(name)
        if sec is None:
            return None
        return memoryview(self.data)[sec.offset:sec.offset + sec.size]

    def symbols(self, wanted: Iterable[str] | None = None) -> dict[str, int]:
        """Defined function symbols (static and dynamic tables): name -> address.

        ``wanted`` limits the search to those names, found in the string table first
        (node exports ~100k symbols: decoding every name would take seconds).
        """
        data = self.data
        want = set(wanted) if wanted is not None else None
        found: dict[str, int] = {}
        for _n, sh_type, _f, _a, sh_offset, sh_size, sh_link, _i, _al, sh_entsize in self.raw_sections:
            if sh_type not in (SHT_SYMTAB, SHT_DYNSYM) or sh_entsize != 24:
                continue
            str_off, str_size = self.raw_sections[sh_link][4], self.raw_sections[sh_link][5]
            table = data[sh_offset:sh_offset + sh_size - sh_size % 24]
            if want is not None:
                offsets = _name_offsets(data[str_off:str_off + str_size], want)
                for st_name, st_info, _o, st_shndx, st_value, _s in struct.iter_unpack(
                        "<IBBHQQ", table):
                    name = offsets.get(st_name)
                    if name and (st_info & 0xF) == STT_FUNC and st_shndx and st_value:
                        found.setdefault(name, st_value)
                continue
            for st_name, st_info, _o, st_shndx, st_value, _s in struct.iter_unpack(
                    "<IBBHQQ", table):
                if (st_info & 0xF) != STT_FUNC or st_shndx == 0 or not st_value:
                    continue
                end = data.find(b"\0", str_off + st_name)
                name = data[str_off + st_name:end].decode("ascii", "replace").split("@")[0]
                found.setdefault(name, st_value)
        return found


def _name_offsets(strings: bytes, names: set[str]) -> dict[int, str]:
    """String-table offsets at which each wanted name starts (plain or name@VERSION)."""
    out: dict[int, str] = {}
    for name in names:
        needle = name.encode()
        for end in (b"\0", b"@"):
            pos = strings.find(b"\0" + needle + end)
            while pos >= 0:
                out[pos + 1] = name
                pos = strings.find(b"\0" + needle + end, pos + 1)
    return out


def read_symbols(path: str | os.PathLike, wanted: Iterable[str] | None = None) -> ElfSymbols:
    """The function symbols of an ELF file (``wanted`` limits them to those names)."""
    try:
        with ElfFile(path) as elf:
            return ElfSymbols(elf.path, elf.is_exec, elf.symbols(wanted), elf.segments)
    except (struct.error, IndexError) as exc:
        raise ElfError(f"{path}: damaged symbol tables") from exc
