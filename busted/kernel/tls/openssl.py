"""Find OpenSSL on this host and decide where its uprobes go.

OpenSSL comes three ways: the system ``libssl.so`` (1.1 or 3), private copies that
processes load from elsewhere (wheels, vendored apps: seen in ``/proc/<pid>/maps``),
and executables that carry it themselves (node exports ``SSL_write_ex`` from its own
binary). :func:`discover` lists all three; :func:`plan` reads a file's ELF symbols and
the first bytes of each function to choose the probe sites.

Why the first bytes matter (bench/README.md, `busted bench probes`): a uprobe on an instruction
the kernel cannot emulate is single-stepped, ~9 us per hit on this VM, against ~1 us
for an emulated one (``push``, ``call``, jumps). Debian's libssl3 starts
``SSL_write_ex`` with ``sub $8,%rsp; call <internal>``: the internal function takes the
same arguments and starts with ``push``, so the probes go there. This module reads
ELF with ``struct`` only (no bcc): it runs in doctor and unit tests without root.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from collections.abc import Iterable, Iterator

from busted.kernel.tls.elf import ElfError, ElfSymbols, read_symbols
from busted.kernel.tls.site import PerFile, ProbeSite

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


NAME = "OpenSSL"
BPF = "tls.bpf.c"


def _carries(path: str) -> bool:
    try:
        syms = read_symbols(path, (MARKER_SYMBOL, "SSL_write")).symbols
    except (ElfError, OSError):
        return False
    return MARKER_SYMBOL in syms or "SSL_write" in syms


def _safe_plan(path: str) -> list[ProbeSite]:
    try:
        return _plan(path)
    except (ElfError, OSError):
        return []


# Every exec on the host asks whether its program carries OpenSSL: cached per file.
_HAS_IT = PerFile(_carries)
_PLANS = PerFile(_safe_plan, limit=256)


def has_openssl(path: str | os.PathLike) -> bool:
    """True if the ELF file defines OpenSSL's ``SSL_write_ex`` or ``SSL_write`` itself."""
    return _HAS_IT.get(path, False)


carries = has_openssl


# --- probe plan ------------------------------------------------------------------------


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
    sites = _PLANS.get(path, [])  # cached per file and per content (vendored node copies)
    return [dataclasses.replace(site, path=str(path)) for site in sites]


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


def file_key(path: str) -> tuple[int, int] | None:
    """(device, inode): uprobes are per inode, so two paths to one file probe once."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
