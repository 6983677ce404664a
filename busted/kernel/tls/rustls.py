"""rustls in stripped Rust binaries (OpenAI Codex): probes on aws-lc's AEAD seal/open.

Why this layer, and not rustls itself. rustls's own plaintext functions
(``buffer_plaintext``, ``take_received_plaintext``) are generic Rust code: inlined and
reshaped by every rustls or compiler update, and found in a stripped binary only by
byte signatures that silently stop matching. Below rustls, its default crypto provider
(aws-lc-rs) encrypts and decrypts every TLS record with aws-lc's C functions
``EVP_AEAD_CTX_seal`` and ``EVP_AEAD_CTX_open``, whose arguments are the C ABI and
whose plaintext is one whole TLS record: read at seal's entry (before the in-place
encryption) it is what the program sends, read after open returns it is what it got.
Checked with uprobe hit counts during real ``codex exec`` runs of Codex 0.148.0 and
0.171.0 (rustls 0.23, aws-lc-rs 1.16 / 1.18): every request and answer record went
through these two functions, keys were set with ``EVP_AEAD_CTX_init_with_direction``.

How they are found without symbols. aws-lc reports errors with
``ERR_put_error(ERR_LIB_CIPHER=30, 0, reason, __FILE__, __LINE__)``, and the file name
of aead.c stays in the binary. Every ``lea rcx, [rip+file]`` that points at it is an
error report; the instructions right after it load the library (edi) and the reason
(edx). The report sites are grouped by the function that holds them (function bounds
from the ``.eh_frame_hdr`` table of FDEs), and each function is known by its exact set
of reasons, which is what aead.c's checks are:

- ``EVP_AEAD_CTX_seal``: {103, 115, 117};
- ``EVP_AEAD_CTX_seal_scatter``: {112, 115} (rustls seals TLS 1.2 records with it);
- ``EVP_AEAD_CTX_open``: {101, 103, 104, 115};
- ``EVP_AEAD_CTX_init_with_direction``: {120} (``EVP_AEAD_CTX_init``, {120, 124},
  inlines it and is probed too when found).

The same sets held in both Codex releases (line numbers moved, the sets did not). Any
doubt — a report site whose instructions are not the expected ones, a set matching no
function or two, a site outside every FDE — means nothing is probed
(:class:`NotLocated`): a wrong address would corrupt the traced program.

Builds whose rustls runs on ``ring`` instead of aws-lc are recognised but not probed:
ring's AEAD functions report no errors by file name, so nothing names them for certain.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import re
import struct

from busted.kernel.tls.elf import ElfError, ElfFile
from busted.kernel.tls.site import NotLocated, PerFile, ProbeSite

NAME = "rustls (aws-lc)"
BPF = "rustls.bpf.c"

# The tail of aws-lc's path for aead.c (the build's prefix before it varies).
AEAD_FILE = b"/crypto/fipsmodule/cipher/aead.c\0"
# A crate path of rustls itself: BoringSSL (Bun, Claude Code) has aead.c too, not rustls.
RUSTLS_MARK = re.compile(rb"/rustls-0\.\d+\.\d+/src/")
RING_MARK = re.compile(rb"/ring-0\.\d+\.\d+/src/")
ERR_LIB_CIPHER = 30

SEAL = frozenset({103, 115, 117})
SEAL_SCATTER = frozenset({112, 115})
OPEN = frozenset({101, 103, 104, 115})
INIT_WITH_DIRECTION = frozenset({120})
INIT = frozenset({120, 124})

# lea r64, [rip+disp32]: REX.W (+R), 8d, modrm with mod=00 rm=101
_LEA_RIP = re.compile(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]", re.S)
_LEA_RCX = b"\x48\x8d\x0d"


def _in_rodata(elf: ElfFile, pattern: re.Pattern[bytes]) -> bool:
    """Does the pattern occur in .rodata? (searched in the mapping: no copy)"""
    sec = elf.sections.get(".rodata")
    return sec is not None and pattern.search(elf.data, sec.offset, sec.offset + sec.size) is not None


def _find_all(elf: ElfFile, needle: bytes) -> list[int]:
    """File offsets of ``needle`` in .rodata."""
    sec = elf.sections.get(".rodata")
    if sec is None:
        return []
    found, end = [], sec.offset + sec.size
    pos = elf.data.find(needle, sec.offset, end)
    while pos >= 0:
        found.append(pos)
        pos = elf.data.find(needle, pos + 1, end)
    return found


def _carries(path: str) -> bool:
    try:
        with ElfFile(path) as elf:
            return _in_rodata(elf, RUSTLS_MARK)
    except (ElfError, OSError):
        return False


_CARRIES = PerFile(_carries)


def carries(path: str | os.PathLike) -> bool:
    """Does this ELF file hold rustls (its crate paths are in the read-only data)?"""
    return _CARRIES.get(path, False)


# --- .eh_frame_hdr: where functions begin and end ---------------------------------------


def _uleb(data: memoryview | bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


class Functions:
    """Function ranges from the FDEs listed in ``.eh_frame_hdr`` (sorted by start)."""

    def __init__(self, elf: ElfFile) -> None:
        hdr = elf.sections.get(".eh_frame_hdr")
        data = elf.section_bytes(".eh_frame_hdr")
        if hdr is None or data is None or len(data) < 12:
            raise NotLocated("no .eh_frame_hdr: function bounds unknown")
        version, _ptr_enc, count_enc, table_enc = data[0], data[1], data[2], data[3]
        # table entries as (datarel sdata4 start, datarel sdata4 FDE address): what
        # every linker writes; anything else is not guessed at
        if version != 1 or count_enc != 0x03 or table_enc != 0x3B:
            raise NotLocated(f".eh_frame_hdr encodings {count_enc:#x}/{table_enc:#x} not handled")
        (count,) = struct.unpack_from("<I", data, 8)
        table = struct.unpack_from(f"<{2 * count}i", data, 12)
        self.elf = elf
        self.starts = [hdr.addr + table[i] for i in range(0, 2 * count, 2)]
        self.fdes = [hdr.addr + table[i] for i in range(1, 2 * count, 2)]

    def containing(self, addr: int) -> int | None:
        """Start of the function whose FDE covers ``addr``, None if none does."""
        i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0:
            return None
        start, length = self._range(self.fdes[i])
        if start != self.starts[i] or not start <= addr < start + length:
            return None
        return start

    def _range(self, fde: int) -> tuple[int, int]:
        """(pc_begin, pc_range) of one FDE, with its CIE's pointer encoding."""
        elf = self.elf
        head = elf.read(fde, 8)
        if len(head) < 8:
            return -1, 0
        _length, cie_delta = struct.unpack("<Ii", head)
        enc = self._fde_encoding(fde + 4 - cie_delta)
        pos = fde + 8
        if enc == 0x1B:  # pcrel sdata4
            (begin,) = struct.unpack("<i", elf.read(pos, 4))
            begin += pos
        elif enc in (0x03, 0x0B):  # absolute udata4 / sdata4
            (begin,) = struct.unpack("<I" if enc == 0x03 else "<i", elf.read(pos, 4))
        else:
            return -1, 0
        (size,) = struct.unpack("<I", elf.read(pos + 4, 4))
        return begin, size

    def _fde_encoding(self, cie: int) -> int:
        """The 'R' pointer encoding of a CIE (0 when it has none we can read)."""
        raw = self.elf.read(cie, 64)
        if len(raw) < 10 or raw[8] not in (1, 3):
            return 0
        end = raw.find(b"\0", 9)
        aug = bytes(raw[9:end])
        if end < 0 or not aug.startswith(b"z"):
            return 0
        pos = end + 1
        _, pos = _uleb(raw, pos)  # code alignment
        _, pos = _uleb(raw, pos)  # data alignment (sleb: same length)
        if raw[8] == 1:
            pos += 1  # return address register, one byte in version 1
        else:
            _, pos = _uleb(raw, pos)
        _, pos = _uleb(raw, pos)  # augmentation data length
        for ch in aug[1:]:
            if ch == ord("R"):
                return raw[pos]
            if ch == ord("P"):
                return 0  # a personality before R: not in the CIEs we meet
            if ch == ord("L"):
                pos += 1
        return 0


# --- error reports of aead.c --------------------------------------------------------


def _reason_after(code: bytes) -> int | None:
    """The reason of an ``ERR_put_error`` call whose file argument was just loaded:
    the instructions up to the call (or the jump to a shared call) must be the plain
    argument loads, with the cipher library in edi."""
    lib = reason = None
    pos = 0
    for _ in range(8):
        op = code[pos:pos + 1]
        if op == b"\xbf" and len(code) >= pos + 5:  # mov edi, imm32
            (lib,) = struct.unpack_from("<I", code, pos + 1)
            pos += 5
        elif op == b"\xba" and len(code) >= pos + 5:  # mov edx, imm32
            (reason,) = struct.unpack_from("<I", code, pos + 1)
            pos += 5
        elif code[pos:pos + 2] in (b"\x31\xf6", b"\x33\xf6"):  # xor esi, esi
            pos += 2
        elif code[pos:pos + 2] == b"\x41\xb8":  # mov r8d, imm32 (the line)
            pos += 6
        elif op in (b"\xe8", b"\xe9", b"\xeb"):  # call / jmp to the shared call
            break
        else:
            return None
    else:
        return None
    return reason if lib == ERR_LIB_CIPHER else None


def report_sites(elf: ElfFile, file_addr: int) -> list[int]:
    """Addresses of every ``lea r64, [rip+file]`` in .text that loads aead.c's name."""
    text = elf.sections.get(".text")
    if text is None:
        raise NotLocated("no .text section")
    sites = []
    data = elf.data
    delta = text.addr - text.offset  # file offset -> address
    unpack = struct.unpack_from
    for m in _LEA_RIP.finditer(data, text.offset, text.offset + text.size):
        i = m.start()
        if delta + i + 7 + unpack("<i", data, i + 3)[0] == file_addr:
            sites.append(delta + i)
    return sites


def locate(elf: ElfFile) -> dict[str, int]:
    """Addresses of the AEAD functions ("seal", "open", "init_with_direction",
    maybe "init"); NotLocated with the reason when they are not certain."""
    # the string starts after the NUL before the match (its prefix path varies)
    lo = elf.sections[".rodata"].offset if ".rodata" in elf.sections else 0
    names = [elf.vaddr_of(elf.data.rfind(b"\0", lo, pos) + 1)
             for pos in _find_all(elf, AEAD_FILE)]
    if len(names) != 1 or names[0] is None:
        raise NotLocated(f"aws-lc's aead.c named {len(names)} times in .rodata, not once")
    sites = report_sites(elf, names[0])
    if not sites:
        raise NotLocated("no error report of aws-lc's aead.c in the code")
    functions = Functions(elf)
    reasons: dict[int, set[int]] = {}
    for site in sites:
        code = elf.read(site, 48)
        reason = _reason_after(code[7:]) if code[:3] == _LEA_RCX else None
        if reason is None:
            raise NotLocated(f"an aead.c error report at {site:#x} is not the expected "
                             "ERR_put_error call")
        fn = functions.containing(site)
        if fn is None:
            raise NotLocated(f"an aead.c error report at {site:#x} is in no FDE's range")
        reasons.setdefault(fn, set()).add(reason)
    return identify(reasons)


def identify(reasons: dict[int, set[int]]) -> dict[str, int]:
    """Name the functions by their reason sets: each wanted set must be held by exactly
    one function (``EVP_AEAD_CTX_init`` is optional: rustls does not call it; so is
    ``EVP_AEAD_CTX_seal_scatter``, which only TLS 1.2 connections use)."""
    found: dict[str, int] = {}
    for name, want, required in (("seal", SEAL, True), ("open", OPEN, True),
                                 ("init_with_direction", INIT_WITH_DIRECTION, True),
                                 ("seal_scatter", SEAL_SCATTER, False), ("init", INIT, False)):
        matches = [fn for fn, got in reasons.items() if got == want]
        if len(matches) == 1:
            found[name] = matches[0]
        elif required or matches:
            raise NotLocated(f"EVP_AEAD_CTX_{name}: {len(matches)} functions report its "
                             f"errors {sorted(want)}, not one")
    return found


# --- plan --------------------------------------------------------------------------------

_PROGRAMS = (
    ("seal", "aead_seal_enter", False, "EVP_AEAD_CTX_seal: plaintext record before encryption"),
    ("seal_scatter", "aead_seal_scatter_enter", False, "EVP_AEAD_CTX_seal_scatter: TLS 1.2 records"),
    ("open", "aead_open_enter", False, "EVP_AEAD_CTX_open"),
    ("open", "aead_open_return", True, "plaintext record after decryption"),
    ("init_with_direction", "aead_init_enter", False,
     "EVP_AEAD_CTX_init_with_direction: ties a key to its socket"),
    ("init", "aead_init_enter", False, "EVP_AEAD_CTX_init"),
)


def _plan(path: str) -> list[ProbeSite] | str:
    try:
        with ElfFile(path) as elf:
            if not _find_all(elf, AEAD_FILE):
                if _in_rodata(elf, RING_MARK):
                    return ("rustls on ring: ring's AEAD code reports no errors by file "
                            "name, so its functions cannot be found with certainty")
                return "rustls without aws-lc: no known crypto provider to probe"
            found = locate(elf)
    except NotLocated as exc:
        return str(exc)
    except (ElfError, OSError, struct.error, IndexError) as exc:
        return f"unreadable ELF: {exc}"
    return [ProbeSite(path, fn, "", found[key], found[key], ret, why)
            for key, fn, ret, why in _PROGRAMS if key in found]


_PLANS = PerFile(_plan, limit=64)


def plan(path: str | os.PathLike) -> list[ProbeSite]:
    """The probes for one file carrying rustls; NotLocated when they are not certain."""
    answer = _PLANS.get(path, [])
    if isinstance(answer, str):
        raise NotLocated(answer)
    return [dataclasses.replace(site, path=str(path)) for site in answer]
