"""Find OpenSSL on this host and decide where its uprobes go.

OpenSSL comes three ways: the system ``libssl.so`` (1.1 or 3), private copies that
processes load from elsewhere (wheels, vendored apps: seen in ``/proc/<pid>/maps``),
and executables that carry it themselves (node exports ``SSL_write_ex`` from its own
binary). :func:`discover` lists all three; :func:`plan` reads a file's ELF symbols and
the first bytes of each function to choose the probe sites.

Why the first bytes matter (see ../shared/measurements.md): a uprobe on an instruction
the kernel cannot emulate is single-stepped, ~9 us per hit on this VM, against ~1 us
for an emulated one (``push``, ``call``, jumps). Debian's libssl3 starts
``SSL_write_ex`` with ``sub $8,%rsp; call <internal>``: the internal function takes the
same arguments and starts with ``push``, so the probes go there. This module reads
ELF with ``struct`` only (no bcc): it runs in doctor and unit tests without root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import mmap
import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Functions whose presence marks a file as carrying OpenSSL.
MARKER_SYMBOL = "SSL_write_ex"
WANTED = (
    "SSL_write_ex", "SSL_read_ex", "SSL_write", "SSL_read",
    "SSL_ctrl", "SSL_set_fd", "SSL_free",
)
SYSTEM_LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib",
    "/usr/local/lib", "/lib",
)
_LIBSSL_NAME = re.compile(r"libssl\.so(\.[0-9.]+)?$")
# x86-64 first bytes the kernel emulates instead of single-stepping: push reg,
# push r8-r15, call rel32, jmp rel32/rel8.
_EMULATED_FIRST = re.compile(rb"^(?:[\x50-\x57]|\x41[\x50-\x57]|\xe8|\xe9|\xeb)", re.S)
_ENDBR64 = b"\xf3\x0f\x1e\xfa"


class ElfError(ValueError):
    """The file is not a readable 64-bit little-endian ELF."""


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


def read_symbols(path: str | os.PathLike, wanted: Iterable[str] | None = None) -> ElfSymbols:
    """Read the dynamic (and, if present, static) function symbols of an ELF file.

    ``wanted`` limits the result to those names (plus the anchors needed later);
    None keeps every defined function symbol.
    """
    path = str(path)
    want = set(wanted) if wanted is not None else None
    try:
        with open(path, "rb") as f:
            # mmap: node is ~100 MB and only its headers and symbol tables are read
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise ElfError(f"{path}: {exc}") from exc
    try:
        return _parse(path, data, want)
    finally:
        data.close()


def _parse(path: str, data: mmap.mmap, want: set[str] | None) -> ElfSymbols:
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ElfError(f"{path}: not a 64-bit little-endian ELF file")
    (e_type,) = struct.unpack_from("<H", data, 16)
    e_phoff, e_shoff = struct.unpack_from("<QQ", data, 32)
    e_phentsize, e_phnum, e_shentsize, e_shnum = struct.unpack_from("<HHHH", data, 54)
    segments = []
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, e_phoff + i * e_phentsize
        )
        if p_type == 1:  # PT_LOAD
            segments.append((p_vaddr, p_offset, p_filesz))
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
        for i in range(e_shnum)
    ]
    symbols: dict[str, int] = {}
    for _name, sh_type, _fl, _addr, sh_offset, sh_size, sh_link, _info, _al, sh_entsize in sections:
        if sh_type not in (2, 11) or sh_entsize != 24:  # SHT_SYMTAB, SHT_DYNSYM (Elf64_Sym)
            continue
        str_off, str_size = sections[sh_link][4], sections[sh_link][5]
        table = data[sh_offset : sh_offset + sh_size - sh_size % 24]
        if want is not None:
            # node exports ~100k symbols: find the wanted names in the string table
            # once and compare offsets, instead of decoding every name
            strings = data[str_off : str_off + str_size]
            offsets = _name_offsets(strings, want)
            for st_name, st_info, _o, st_shndx, st_value, _s in struct.iter_unpack("<IBBHQQ", table):
                name = offsets.get(st_name)
                if name and (st_info & 0xF) == 2 and st_shndx and st_value:
                    symbols.setdefault(name, st_value)
            continue
        for st_name, st_info, _o, st_shndx, st_value, _s in struct.iter_unpack("<IBBHQQ", table):
            if (st_info & 0xF) != 2 or st_shndx == 0 or not st_value:  # defined STT_FUNC
                continue
            end = data.find(b"\0", str_off + st_name)
            name = data[str_off + st_name : end].decode("ascii", "replace").split("@")[0]
            symbols.setdefault(name, st_value)
    return ElfSymbols(path, e_type == 2, symbols, tuple(segments))


_VERDICTS: dict[tuple[int, int, int, int], bool] = {}  # (dev, ino, size, mtime) -> has it
_PLANS: dict[tuple[int, str], list[ProbeSite]] = {}  # content fingerprint -> sites


def fingerprint(path: str | os.PathLike) -> tuple[int, str] | None:
    """Size and a hash of the first and last 64 KiB: copies of one binary (an agent that
    ships its own node) share a plan without reading 100 MB of symbols again."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(65536)
            f.seek(max(0, size - 65536))
            tail = f.read(65536)
    except OSError:
        return None
    return size, hashlib.sha1(head + tail).hexdigest()


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


def has_openssl(path: str | os.PathLike) -> bool:
    """True if the ELF file defines OpenSSL's ``SSL_write_ex`` itself.

    Cached per file identity: every exec on the host asks this about its program.
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _VERDICTS.get(key)
    if cached is not None:
        return cached
    planned = _PLANS.get(fingerprint(path) or (0, ""))
    if planned is not None:  # a copy of a file already planned (a vendored node)
        _VERDICTS[key] = bool(planned)
        return bool(planned)
    try:
        found = MARKER_SYMBOL in read_symbols(path, (MARKER_SYMBOL,)).symbols
    except (ElfError, OSError, struct.error, IndexError):
        found = False
    if len(_VERDICTS) > 4096:
        _VERDICTS.clear()
    _VERDICTS[key] = found
    return found


# --- probe plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSite:
    """One uprobe (or uretprobe) to attach: ``fn`` at ``sym`` + ``offset`` in ``path``."""

    path: str
    fn: str  # BPF function in bpf/tls.bpf.c
    sym: str  # anchor symbol (exported) ...
    offset: int  # ... plus this offset
    addr: int  # the resulting virtual address
    ret: bool = False  # a return probe
    why: str = ""

    def describe(self) -> str:
        kind = "uretprobe" if self.ret else "uprobe"
        where = f"{self.sym}+{self.offset:#x}" if self.offset else self.sym
        return f"{kind} {self.path}:{where} -> {self.fn}" + (f" ({self.why})" if self.why else "")


def emulated(code: bytes) -> bool:
    """Will the kernel emulate (not single-step) a uprobe on this first instruction?"""
    return bool(_EMULATED_FIRST.match(code))


def call_target(elf: ElfSymbols, vaddr: int) -> int | None:
    """If the function at vaddr is ``[endbr64] sub $imm8,%rsp; call rel32``, the callee."""
    code = elf.code(vaddr, 16)
    pos = 4 if code.startswith(_ENDBR64) else 0
    if code[pos : pos + 3] != b"\x48\x83\xec" or len(code) < pos + 9 or code[pos + 4] != 0xE8:
        return None
    (rel,) = struct.unpack_from("<i", code, pos + 5)
    return vaddr + pos + 9 + rel


def calls(elf: ElfSymbols, vaddr: int, target: int, span: int = 96) -> bool:
    """Does the function at vaddr contain a ``call target`` in its first bytes?"""
    code = elf.code(vaddr, span)
    for i in range(len(code) - 4):
        if code[i] == 0xE8:
            (rel,) = struct.unpack_from("<i", code, i + 1)
            if vaddr + i + 5 + rel == target:
                return True
    return False


def _site(elf: ElfSymbols, fn: str, addr: int, ret: bool, why: str) -> ProbeSite:
    for name, value in elf.symbols.items():
        if value == addr:
            return ProbeSite(elf.path, fn, name, 0, addr, ret, why)
    # not an exported function (an internal callee): anchor on the nearest symbol
    # below it, from the full table (small for libssl, only read in this case)
    full = read_symbols(elf.path, None)
    anchor = full.nearest_symbol_below(addr) or ("", 0)
    return ProbeSite(elf.path, fn, anchor[0], addr - anchor[1], addr, ret, why)


def _plan_pair(elf: ElfSymbols, direction: str) -> list[ProbeSite]:
    """Sites for one direction ("write" or "read"): entry + return probes."""
    ex_name, plain_name = f"SSL_{direction}_ex", f"SSL_{direction}"
    ex, plain = elf.symbols.get(ex_name), elf.symbols.get(plain_name)
    sites: list[ProbeSite] = []
    covered_plain = False
    if ex is not None:
        if emulated(elf.code(ex, 8)):
            sites += [
                _site(elf, f"tls_{direction}_ex_enter", ex, False, "entry is emulated"),
                _site(elf, f"tls_{direction}_return", ex, True, ""),
            ]
        else:
            inner = call_target(elf, ex)
            if inner is not None and emulated(elf.code(inner, 8)):
                why = f"internal callee of {ex_name} (same arguments, emulated entry)"
                sites += [
                    _site(elf, f"tls_{direction}_ex_enter", inner, False, why),
                    _site(elf, f"tls_{direction}_return", inner, True, ""),
                ]
                covered_plain = plain is not None and calls(elf, plain, inner)
            else:
                sites += [
                    _site(elf, f"tls_{direction}_ex_enter", ex, False, "single-stepped entry"),
                    _site(elf, f"tls_{direction}_return", ex, True, ""),
                ]
    if plain is not None and not covered_plain:
        # Nested SSL_write -> SSL_write_ex calls are reported once (see tls.bpf.c).
        sites += [
            _site(elf, f"tls_{direction}_enter", plain, False, ""),
            _site(elf, f"tls_{direction}_return", plain, True, ""),
        ]
    return sites


def plan(path: str | os.PathLike) -> list[ProbeSite]:
    """Every uprobe to attach to one file carrying OpenSSL (empty if it has none)."""
    key = fingerprint(path)
    cached = _PLANS.get(key) if key else None
    if cached is not None:
        return [dataclasses.replace(site, path=str(path)) for site in cached]
    sites = _plan(path)
    if key:
        if len(_PLANS) > 256:
            _PLANS.clear()
        _PLANS[key] = sites
    return sites


def _plan(path: str | os.PathLike) -> list[ProbeSite]:
    elf = read_symbols(path, WANTED)
    if MARKER_SYMBOL not in elf.symbols and "SSL_write" not in elf.symbols:
        return []
    sites = _plan_pair(elf, "write") + _plan_pair(elf, "read")
    for sym, fn in (("SSL_ctrl", "tls_ctrl_enter"), ("SSL_set_fd", "tls_set_fd_enter"),
                    ("SSL_free", "tls_free_enter")):
        if sym in elf.symbols:
            sites.append(_site(elf, fn, elf.symbols[sym], False, ""))
    return sites


# --- discovery -------------------------------------------------------------------------


def system_libraries(dirs: Iterable[str] = SYSTEM_LIB_DIRS) -> list[str]:
    """The system's libssl shared objects (real files, one per inode)."""
    found: dict[tuple[int, int], str] = {}
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            if _LIBSSL_NAME.match(name):
                real = os.path.realpath(os.path.join(d, name))
                try:
                    st = os.stat(real)
                except OSError:
                    continue
                found.setdefault((st.st_dev, st.st_ino), real)
    return sorted(found.values())


def mapped_libraries(pid: int, proc: str = "/proc") -> set[str]:
    """libssl files mapped by one process, as paths valid from our mount namespace."""
    paths = set()
    try:
        with open(f"{proc}/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and _LIBSSL_NAME.search(parts[5].strip()):
                    paths.add(_from_root(pid, parts[5].strip(), proc))
    except OSError:
        pass
    return paths


def process_executable(pid: int, proc: str = "/proc") -> str | None:
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return None
    if exe.endswith(" (deleted)"):
        return None
    return _from_root(pid, exe, proc)


def _from_root(pid: int, path: str, proc: str) -> str:
    """A path seen by a process in another mount namespace, reached via its root."""
    direct = path
    via_root = f"{proc}/{pid}/root{path}"
    try:
        if os.stat(direct).st_ino == os.stat(via_root).st_ino:
            return direct
    except OSError:
        pass
    return via_root if os.path.exists(via_root) else direct


def pids(proc: str = "/proc") -> Iterator[int]:
    for name in os.listdir(proc):
        if name.isdigit():
            yield int(name)


def targets_of_process(pid: int, proc: str = "/proc") -> set[str]:
    """Files with OpenSSL that one process runs: libssl copies and its executable."""
    found = mapped_libraries(pid, proc)
    exe = process_executable(pid, proc)
    if exe and has_openssl(exe):
        found.add(exe)
    return found


def executables_in_path(names: Iterable[str] = ("node", "nodejs", "bun", "deno")) -> set[str]:
    """Well-known programs that embed OpenSSL, found on PATH (probed before they run)."""
    found = set()
    for d in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":"):
        for name in names:
            p = Path(d) / name
            if p.is_file():
                real = os.path.realpath(p)
                if has_openssl(real):
                    found.add(real)
    return found


def discover(proc: str = "/proc") -> set[str]:
    """Every file to probe now: system libssl, running processes' copies, node & co."""
    found = {p for p in system_libraries() if _has_ssl_symbols(p)}
    found |= executables_in_path()
    for pid in pids(proc):
        found |= targets_of_process(pid, proc)
    return found


def _has_ssl_symbols(path: str) -> bool:
    try:
        syms = read_symbols(path, ("SSL_write", MARKER_SYMBOL)).symbols
    except (ElfError, OSError, struct.error, IndexError):
        return False
    return "SSL_write" in syms or MARKER_SYMBOL in syms


def file_key(path: str) -> tuple[int, int] | None:
    """(device, inode): uprobes are per inode, so two paths to one file probe once."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
