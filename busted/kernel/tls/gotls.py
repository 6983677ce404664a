"""Go's crypto/tls: find ``(*Conn).Write`` and ``(*Conn).Read`` in a Go binary and place
the probes of ``bpf/gotls.bpf.c``.

Go never calls OpenSSL: a Go program encrypts with its own ``crypto/tls``, compiled into
the executable, which is usually stripped (``-ldflags "-s -w"`` drops the ELF symbol
table). The functions are found through ``.gopclntab`` instead, the table the Go runtime
itself needs for stack traces, which every Go binary keeps: its function table maps
each function's name to its entry, and the next entry is where the function ends.
Two formats are read: Go 1.18-1.19 (magic ``0xfffffff0``) and Go 1.20 and later
(``0xfffffff1``); both store entries as offsets from ``textStart``, which a
position-independent build leaves at 0 (then ``.text``'s address is used). Tested on
Debian 12's Go 1.19 and on Go 1.27 (tests/privileged/test_go_tls.py builds both, stripped
and not). Older Go (1.17 and before: another table format, and for 1.16 and before
arguments on the stack) is refused with :class:`NotLocated`.

Where the probes go, and why:

- Go's register ABI (amd64): the receiver ``*tls.Conn`` is in RAX, the slice in
  RBX (pointer) and RCX (length); results come back in RAX (n) and RBX/RCX (error). The
  goroutine (``g``) is always in R14.
- Entries: every Go function that may grow its stack starts with
  ``[lea r12,[rsp-N];] cmp rsp|r12,[r14+0x10]; jbe morestack``. A uprobe on that first
  instruction is single-stepped: an *empty* one there adds ~16-17 us of CPU per call,
  against ~0-0.5 us on the ``jbe``, which the kernel emulates (`busted bench go-tls`,
  2-core VM, Go 1.19: "empty uprobes" lines). So the entry probes sit
  on the ``jbe``, with the arguments still untouched in their registers, and the program
  reads the branch from the flags (CF or ZF set = taken): when the stack must grow, the
  runtime copies it and runs the function again from its start, so the probe acts only
  on the pass that goes on (once per call, never twice).
- ``Write`` reports its bytes at entry (where ``--enforce`` must hold it before
  encryption anyway).
- ``Read`` stashes (conn, buffer) per goroutine at entry. Its plaintext is then read
  where ``Read`` copies the decrypted record into the caller's buffer: the one
  ``call runtime.memmove`` of the inlined ``bytes.Reader.Read`` (decoded with capstone;
  a call is emulated; RBX = source, RCX = n). Where that call is not found exactly once,
  the probes go on every ``RET`` of ``Read`` instead (single-stepped: an empty probe on
  each adds ~16 us per Read, on the memmove call ~0).
  Never uretprobes: a uretprobe overwrites the return address on the goroutine stack,
  which the runtime moves when the stack grows (and the program then crashes).
  Fewer probes matter beyond their cost per call: each uprobe takes 0.1-0.3 s to
  detach at the monitor's exit on this VM (the kernel does them one at a time).
- ``(*Conn).clientHandshake`` / ``serverHandshake``: a new connection on a ``*tls.Conn``
  address the garbage collector reused; the program forgets what it knew about it.

When: a Go program is probed when it is exec'd (capture reads its table in ~3 ms), but
a Go HTTPS client writes its first request 5-10 ms after exec, so without --enforce the
first request of a binary the monitor has never seen can leave before its probes are in
(seen in tests as "answer captured, request missing"); under --enforce the exec itself
is held until the file is probed (bpf/gotls.bpf.c), so nothing leaves unjudged.

The file descriptor is followed in memory (``*tls.Conn`` -> ``net.Conn`` -> ``*net.TCPConn``
-> ``*netFD`` -> ``pfd.Sysfd``; see the C file), so events carry their connection's
addresses even though goroutines hop between threads.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from dataclasses import dataclass

from busted.kernel.tls.elf import ElfError, ElfFile
from busted.kernel.tls.site import NotLocated, PerFile, ProbeSite

NAME = "Go crypto/tls"
BPF = "gotls.bpf.c"

WRITE = "crypto/tls.(*Conn).Write"
READ = "crypto/tls.(*Conn).Read"
HANDSHAKES = ("crypto/tls.(*Conn).clientHandshake", "crypto/tls.(*Conn).serverHandshake")
MEMMOVE = "runtime.memmove"

MAGIC_118 = 0xFFFFFFF0  # Go 1.18, 1.19
MAGIC_120 = 0xFFFFFFF1  # Go 1.20 and later
OLD_MAGICS = {0xFFFFFFFB: "Go 1.2-1.15", 0xFFFFFFFA: "Go 1.16-1.17"}
PCLNTAB_SECTIONS = (".gopclntab", ".data.rel.ro.gopclntab")
EM_X86_64 = 62
_BUILDINFO_MAGIC = b"\xff Go buildinf:"


class GoError(ValueError):
    """The file is Go, but its function table cannot be read."""


@dataclass(frozen=True)
class GoFunc:
    name: str
    entry: int  # virtual address
    end: int  # first address past the function


class Pclntab:
    """The function table of one Go binary (Go 1.18 and later)."""

    def __init__(self, data: bytes, text_addr: int) -> None:
        if len(data) < 72:
            raise GoError("pclntab too short")
        magic, pad, quantum, ptr_size = struct.unpack_from("<IHBB", data, 0)
        self.magic = magic
        if magic in OLD_MAGICS:
            return
        if magic not in (MAGIC_118, MAGIC_120) or pad != 0 or quantum != 1 or ptr_size != 8:
            raise GoError(f"not an amd64 pclntab (magic {magic:#x})")
        (self.nfunc, _nfiles, text_start, funcname_off, _cu, _file, _pc,
         functab_off) = struct.unpack_from("<8Q", data, 8)
        # a position-independent build fills textStart in at run time
        self.text_start = text_start or text_addr
        self.data = data
        self.funcnames = funcname_off
        self.functab = functab_off
        end = functab_off + (self.nfunc + 1) * 8
        if not self.nfunc or funcname_off >= len(data) or end > len(data):
            raise GoError("pclntab offsets out of range")

    @property
    def too_old(self) -> str:
        """Which old Go this table comes from, "" for a supported one."""
        return OLD_MAGICS.get(self.magic, "")

    def find(self, names: tuple[str, ...]) -> dict[str, GoFunc]:
        """Functions by exact name. Names are looked up as bytes in the name table first,
        then one pass over the function table matches their offsets."""
        data, base = self.data, self.funcnames
        wanted: dict[int, str] = {}
        for name in names:
            needle = name.encode() + b"\0"
            pos = data.find(b"\0" + needle, base, self.functab)
            if pos >= 0:
                wanted[pos + 1 - base] = name
            elif data.startswith(needle, base):
                wanted[0] = name
        if not wanted:
            return {}
        found: dict[str, GoFunc] = {}
        table = memoryview(data)[self.functab:self.functab + (self.nfunc + 1) * 8].cast("I")
        for i in range(self.nfunc):
            func_off = self.functab + table[2 * i + 1]
            if func_off + 8 > len(data):
                raise GoError("function record out of range")
            entry_off, name_off = struct.unpack_from("<Ii", data, func_off)
            name = wanted.get(name_off)
            if name is None:
                continue
            if entry_off != table[2 * i]:
                raise GoError(f"{name}: function table and record disagree")
            found[name] = GoFunc(name, self.text_start + entry_off,
                                 self.text_start + table[2 * i + 2])
            if len(found) == len(wanted):
                break
        return found


def find_pclntab(elf: ElfFile) -> Pclntab | None:
    """The binary's pclntab (None if this is not a Go binary)."""
    text = elf.sections.get(".text")
    text_addr = text.addr if text else 0
    for name in PCLNTAB_SECTIONS:
        sec = elf.sections.get(name)
        if sec is not None and sec.size >= 8:
            return Pclntab(bytes(elf.data[sec.offset:sec.offset + sec.size]), text_addr)
    # no section headers worth the name: the runtime's own symbol, else the magic in a
    # file that says it is Go
    addr = elf.symbols(["runtime.pclntab"]).get("runtime.pclntab")
    if addr is None and ".go.buildinfo" in elf.sections:
        addr = _pclntab_by_magic(elf)
    if addr is None:
        return None
    off = elf.offset_of(addr)
    if off is None:
        return None
    return Pclntab(bytes(elf.data[off:_segment_end(elf, off)]), text_addr)


def _segment_end(elf: ElfFile, offset: int) -> int:
    for _vaddr, seg_off, seg_size in elf.segments:
        if seg_off <= offset < seg_off + seg_size:
            return seg_off + seg_size
    return offset


def _pclntab_by_magic(elf: ElfFile) -> int | None:
    data = elf.data
    for magic in (MAGIC_120, MAGIC_118):
        needle = struct.pack("<IHBB", magic, 0, 1, 8)
        pos = data.find(needle)
        while pos >= 0:
            vaddr = elf.vaddr_of(pos)
            if vaddr is not None:
                try:
                    Pclntab(bytes(data[pos:_segment_end(elf, pos)]), 0)
                    return vaddr
                except GoError:
                    pass
            pos = data.find(needle, pos + 1)
    return None


def go_version(elf: ElfFile) -> str:
    """"go1.19.8" from ``.go.buildinfo`` (Go 1.18+ stores it inline), "" if unknown."""
    sec = elf.sections.get(".go.buildinfo")
    raw = bytes(elf.data[sec.offset:sec.offset + min(sec.size, 4096)]) if sec else b""
    if raw[:14] != _BUILDINFO_MAGIC or len(raw) < 33:
        return ""
    if not raw[15] & 2:  # versions before 1.18 point to the string instead
        return ""
    size, pos = _uvarint(raw, 32)
    return raw[pos:pos + size].decode("ascii", "replace") if size < 64 else ""


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    return value, pos


# --- machine code ----------------------------------------------------------------------


def _disassembler():
    try:
        import capstone
    except ImportError as exc:  # a main dependency: only a broken install lacks it
        raise NotLocated("the capstone disassembler is not installed (pip install capstone)") from exc

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


def stack_check_branch(code: bytes, entry: int) -> int:
    """Address of the ``jbe`` that ends the stack check at a Go function's start.

    The check is ``[lea r12,[rsp-N];] cmp rsp|r12, qword ptr [r14 + 0x10]; jbe ...``
    (R14 = g, g+0x10 = stackguard0). NotLocated if the function does not start so."""
    import capstone.x86 as x86

    md = _disassembler()
    insns = list(md.disasm(code[:32], entry, 4))
    for i, insn in enumerate(insns[:3]):
        if insn.mnemonic != "cmp" or len(insn.operands) != 2:
            continue
        reg, mem = insn.operands
        if (reg.type == x86.X86_OP_REG and mem.type == x86.X86_OP_MEM
                and mem.mem.base == x86.X86_REG_R14 and mem.mem.disp == 0x10
                and mem.mem.index == 0 and i + 1 < len(insns)
                and insns[i + 1].mnemonic == "jbe"):
            return insns[i + 1].address
    raise NotLocated(f"the function at {entry:#x} does not start with Go's stack check")


def _instructions(code: bytes, entry: int):
    """One function's instructions, decoded linearly (Go puts no data inside its
    functions and pads between them with int3)."""
    md = _disassembler()
    md.skipdata = True
    return md.disasm(code, entry)


def return_sites(code: bytes, entry: int) -> list[int]:
    """Addresses of every ``ret`` in one function's code."""
    return [insn.address for insn in _instructions(code, entry) if insn.mnemonic == "ret"]


def call_sites(code: bytes, entry: int, target: int) -> list[int]:
    """Addresses of every direct ``call target`` in one function's code."""
    import capstone.x86 as x86

    return [insn.address for insn in _instructions(code, entry)
            if insn.mnemonic == "call" and insn.operands[0].type == x86.X86_OP_IMM
            and insn.operands[0].imm == target]


# --- the stack module interface -----------------------------------------------------------


def _carries(path: str) -> bool:
    try:
        with ElfFile(path) as elf:
            tab = find_pclntab(elf)
            if tab is None:
                return False
            if tab.too_old:
                # an older table layout: the name is somewhere in it all the same
                return elf.data.find(WRITE.encode() + b"\0") >= 0
            return bool(tab.find((WRITE,)))
    except (ElfError, GoError, OSError, ValueError, IndexError, struct.error):
        return False  # every exec asks: a damaged file is simply not Go


def _plan(path: str) -> list[ProbeSite]:
    try:
        with ElfFile(path) as elf:
            if elf.data[18] != EM_X86_64:
                raise NotLocated("a Go binary for another architecture than x86-64")
            tab = find_pclntab(elf)
            if tab is None:
                return []
            version = go_version(elf) or "Go"
            if tab.too_old:
                raise NotLocated(f"built with {tab.too_old} ({version}): busted reads Go 1.18 "
                                 "and later only (function table format and struct layouts)")
            funcs = tab.find((WRITE, READ, MEMMOVE, *HANDSHAKES))
            for name in (WRITE, READ):
                if name not in funcs:
                    raise NotLocated(f"{name} is not in the function table ({version})")
            handshakes = [funcs[n] for n in HANDSHAKES if n in funcs]
            if not handshakes:
                raise NotLocated(f"no crypto/tls handshake function in {version}: a reused "
                                 "connection could not be told apart")
            sites = [_entry(elf, funcs[WRITE], "gotls_write_enter", version),
                     _entry(elf, funcs[READ], "gotls_read_enter", version),
                     *_read_exits(elf, funcs[READ], funcs.get(MEMMOVE), version)]
            sites += [_entry(elf, f, "gotls_handshake_enter", version) for f in handshakes]
            return sites
    except GoError as exc:
        raise NotLocated(f"unreadable Go function table: {exc}") from exc


def _entry(elf: ElfFile, func: GoFunc, fn: str, version: str) -> ProbeSite:
    code = elf.read(func.entry, 32)
    addr = stack_check_branch(code, func.entry)
    return ProbeSite(elf.path, fn, func.name, addr - func.entry, addr, False,
                     f"stack-check jbe, emulated ({version})")


def _read_exits(elf: ElfFile, read: GoFunc, memmove: GoFunc | None,
                version: str) -> list[ProbeSite]:
    """Where Read's plaintext is seen: its one copy into the caller's buffer if there is
    exactly one (``bytes.Reader.Read`` inlined: ``call runtime.memmove``, emulated, the
    plaintext at RBX and its length in RCX), else every ``ret`` (single-stepped)."""
    code = elf.read(read.entry, read.end - read.entry)
    copies = call_sites(code, read.entry, memmove.entry) if memmove else []
    if len(copies) == 1:
        return [ProbeSite(elf.path, "gotls_read_copy", READ, copies[0] - read.entry, copies[0],
                          False, f"its copy to the caller, emulated call ({version})")]
    rets = return_sites(code, read.entry)
    if not rets:
        raise NotLocated(f"{READ} has no ret instruction ({version})")
    return [ProbeSite(elf.path, "gotls_read_return", READ, addr - read.entry, addr, False,
                      f"ret of Read, single-stepped ({version})") for addr in rets]


def _safe_plan(path: str) -> list[ProbeSite] | str:
    """Sites, or the NotLocated reason as a string (cached like an answer)."""
    try:
        return _plan(path)
    except NotLocated as exc:
        return str(exc)
    except (ElfError, OSError, ValueError, IndexError, struct.error) as exc:
        return f"unreadable Go binary: {exc}"


_CARRIES = PerFile(_carries)
_PLANS: PerFile[list[ProbeSite] | str] = PerFile(_safe_plan, limit=256)


def carries(path: str | os.PathLike) -> bool:
    """True if this ELF file is a Go program with crypto/tls in it."""
    return _CARRIES.get(path, False)


def plan(path: str | os.PathLike) -> list[ProbeSite]:
    """The probes for one Go binary; NotLocated when its crypto/tls cannot be probed."""
    answer = _PLANS.get(path, [])
    if isinstance(answer, str):
        raise NotLocated(answer)
    return [dataclasses.replace(site, path=str(path)) for site in answer]
