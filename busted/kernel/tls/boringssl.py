"""Find BoringSSL's SSL_write / SSL_read / SSL_do_handshake in binaries that carry it
without symbols: Bun, and every program made with Bun (Claude Code).

Byte signatures of prologues break between builds (Claude Code's SSL_do_handshake
prologue changed within 2.1.x). What does not change is what the functions say when
they fail: BoringSSL's ``OPENSSL_PUT_ERROR(SSL, reason)`` calls
``ERR_put_error(ERR_LIB_SSL, 0, reason, __FILE__, __LINE__)`` with the path of
``ssl/ssl_lib.cc`` as ``__FILE__``. So:

1. find that path string in ``.rodata``, and every instruction that loads its address
   (``mov r32, imm32`` in a non-PIE executable, ``lea r, [rip+disp]`` anywhere);
2. find the function around each such place (functions start after ``int3`` padding,
   checked by decoding; two functions laid out without padding in between are told
   apart because no branch crosses from one into the other) and the arguments of the
   call that follows: library, reason code, line. Link-time optimisation may drop the
   unused argument (Bun 1.3, Claude Code 2.1.111: ``(lib, reason, file, line)``), so
   the register that holds the file name says which convention is used;
3. name the functions by their reports (reason codes from BoringSSL's ``ssl.h``/``err.h``):

   - ``SSL_write``: the only function reporting SSL_R_BAD_LENGTH together with
     ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED (QUIC connections) and SSL_R_UNINITIALIZED;
   - ``SSL_read``: among the functions that report ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED
     earlier in ssl_lib.cc than SSL_write and call a function reporting
     SSL_R_UNINITIALIZED (``ssl_read_impl``), the last one (SSL_peek inlined into it);
   - ``SSL_do_handshake``: the function reporting SSL_R_CONNECTION_TYPE_NOT_SET that
     SSL_write calls.

Every rule must match exactly once, and each probed function's start must be a padding
boundary that decodes cleanly (or, for SSL_do_handshake, a call target of SSL_write);
where a ``.eh_frame_hdr`` lists function starts, it must not contradict. Otherwise
:class:`NotLocated` says why and nothing is probed: a wrong address would report garbage.

The three functions have OpenSSL's C ABI (rdi = ``SSL*``, rsi = buffer, edx = int
length), so the OpenSSL programs of ``bpf/tls.bpf.c`` read them; SSL_do_handshake's
probe lets a reused ``SSL*`` start afresh (there is no SSL_free or SSL_set_fd to hook:
the socket is the thread's last one, see ``busted/kernel/tracker.py``).

Cost: once per file (cached per file and content), 0.3-0.6 s for Claude Code's 428 MB
binary on a loaded 2-core VM (``Located.seconds``): two searches over ``.text`` and the
decoding of a few dozen small functions. What the probes cost per call: ``busted bench
boringssl``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from busted.kernel.tls.elf import ElfError, ElfFile
from busted.kernel.tls.openssl import emulated
from busted.kernel.tls.site import NotLocated, PerFile, ProbeSite

NAME = "BoringSSL"
BPF = "tls.bpf.c"

# __FILE__ of BoringSSL's ssl/ssl_lib.cc (C++ since 2023; OpenSSL's is ssl_lib.c)
SOURCE_SUFFIX = b"/ssl/ssl_lib.cc\0"
ERR_LIB_SSL = 16
# reason codes: include/openssl/err.h and ssl.h of BoringSSL
ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED = 66
SSL_R_BAD_LENGTH = 111
SSL_R_CONNECTION_TYPE_NOT_SET = 134
SSL_R_UNINITIALIZED = 226

MAX_FUNCTION = 64 << 10  # bytes decoded from a function start at most
MAX_BACK = 256 << 10  # how far before a report its function's start is looked for
_ALIGN = 16
# instructions after which code does not fall through (ends of functions)
_TERMINATORS = ("ret", "jmp", "ud2", "int3", "hlt")
# capstone's x86 operand types and instruction groups
_REG, _IMM, _MEM = 1, 2, 3
_JUMP, _CALL, _RET = 1, 2, 3


@dataclass(frozen=True)
class Report:
    """One ``OPENSSL_PUT_ERROR`` site: where, and what it reports."""

    addr: int
    reason: int
    line: int


@dataclass
class Function:
    start: int
    end: int  # first byte after its last decoded instruction
    from_padding: bool  # starts after int3 padding (else: split off its neighbour)
    insns: list = field(default_factory=list, repr=False)
    reports: list[Report] = field(default_factory=list)
    calls: set[int] = field(default_factory=set)  # direct call targets

    @property
    def reasons(self) -> set[int]:
        return {r.reason for r in self.reports}

    def lines(self, reason: int) -> list[int]:
        return [r.line for r in self.reports if r.reason == reason]


@dataclass(frozen=True)
class Located:
    """What :func:`locate` found in one file (kept for tests and reports)."""

    ssl_write: int
    ssl_read: int
    ssl_do_handshake: int
    ssl_read_impl: int
    first_bytes: dict[str, bytes]
    reports: dict[str, tuple[tuple[int, int], ...]]  # name -> (reason, line) it reports
    functions: int  # functions reporting from ssl_lib.cc
    seconds: float


def _capstone():
    try:
        import capstone
    except ImportError as exc:  # a dependency of busted: only a broken install lacks it
        raise NotLocated("the capstone disassembler is not installed "
                         "(pip install capstone)") from exc
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


# --- is it BoringSSL? -------------------------------------------------------------------


def _source_paths(elf: ElfFile) -> list[int]:
    """Virtual addresses of every ``.../ssl/ssl_lib.cc`` string in ``.rodata``."""
    ro = elf.sections.get(".rodata")
    if ro is None or not ro.addr:
        return []
    data, end = elf.data, ro.offset + ro.size
    found = []
    pos = data.find(SOURCE_SUFFIX, ro.offset, end)
    while pos >= 0:
        start = data.rfind(b"\0", max(ro.offset, pos - 512), pos) + 1
        if start > 0:
            found.append(ro.addr + start - ro.offset)
        pos = data.find(SOURCE_SUFFIX, pos + 1, end)
    return found


def _carries(path: str) -> bool:
    try:
        with ElfFile(path) as elf:
            if not _source_paths(elf) or ".text" not in elf.sections:
                return False
            # a file exporting OpenSSL's API belongs to the OpenSSL stack
            return not elf.symbols(("SSL_write", "SSL_write_ex"))
    except (ElfError, OSError):
        return False


_CARRIES = PerFile(_carries)


def carries(path: str | os.PathLike) -> bool:
    """Does this ELF file carry BoringSSL without exporting the SSL API? (cached)"""
    return _CARRIES.get(path, False)


# --- where the source file name is loaded ----------------------------------------------


def _references(elf: ElfFile, targets: list[int]) -> list[int]:
    """File offsets in ``.text`` of imm32/disp32 fields that may load a target address
    (the instruction around each is checked by decoding later)."""
    text = elf.sections[".text"]
    data, lo, hi = elf.data, text.offset, text.offset + text.size
    found: set[int] = set()
    for target in targets:
        if elf.is_exec and target < 1 << 31:  # mov r32, imm32 / mov r64, simm32
            needle = struct.pack("<I", target)
            pos = data.find(needle, lo, hi)
            while pos >= 0:
                found.add(pos)
                pos = data.find(needle, pos + 1, hi)
        found.update(_rip_relative(data, lo, hi, text.addr - text.offset, target))
    return sorted(found)


def _rip_relative(data, lo: int, hi: int, bias: int, target: int) -> list[int]:
    """Offsets of ``lea r64, [rip+disp32]`` (REX.W 8d modrm=00.reg.101) reaching target.

    disp32 = target - (address after the 7-byte instruction) changes with the position,
    so the text is searched in 16 MiB windows in which the displacement's top byte takes
    at most two values: one regex per window, each match checked exactly.
    """
    out = []
    window = 1 << 24
    start = lo
    while start < hi:
        stop = min(hi, start + window)
        tops = {((target - (a + bias + 7)) & 0xFFFFFFFF) >> 24 for a in (start, stop - 1)}
        # opcode first: the regex engine skips to a literal first byte quickly (~2 GB/s
        # here, against ~0.2 GB/s for a pattern starting with a character class)
        pattern = re.compile(rb"\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]...["
                             + b"".join(re.escape(bytes([t])) for t in sorted(tops)) + b"]", re.S)
        for m in pattern.finditer(data, start + 1, min(hi, stop + 6)):
            at = m.start() - 1  # the REX.W prefix
            if at >= stop:
                break
            (disp,) = struct.unpack_from("<i", data, at + 3)
            if data[at] in (0x48, 0x4C) and at + bias + 7 + disp == target:
                out.append(at + 3)
        start = stop
    return out


# --- functions around the references ----------------------------------------------------


class _Text:
    """Decoding of ``.text`` by address, with what the rules need from each function."""

    def __init__(self, elf: ElfFile, md) -> None:
        self.elf = elf
        self.md = md
        self.lite = type(md)(md.arch, md.mode)  # no operand details: 3x faster
        text = elf.sections[".text"]
        self.lo, self.hi = text.addr, text.addr + text.size

    def byte(self, addr: int) -> int:
        return self.elf.read(addr, 1)[0]

    def padding_start(self, addr: int) -> int | None:
        """The nearest function start at or before ``addr`` that follows int3 padding
        (and a terminating instruction before the padding), None if none is near."""
        a = addr - addr % _ALIGN
        floor = max(self.lo + _ALIGN, addr - MAX_BACK)
        while a >= floor:
            if self.byte(a - 1) == 0xCC and self._ends_before(a):
                return a
            a -= _ALIGN
        return None

    def _ends_before(self, a: int) -> bool:
        """Is the int3 run ending at ``a`` preceded by an instruction ending a function?"""
        b = a - 1
        while b > self.lo and self.byte(b) == 0xCC and a - b < 64:
            b -= 1
        end = b + 1  # first int3
        code = self.elf.read(end - 15, 15)
        for size in range(1, 16):  # some instruction of `size` bytes ends right there
            insns = list(self.lite.disasm_lite(code[15 - size:], end - size, 1))
            if insns and insns[0][1] == size and (
                    insns[0][2] in _TERMINATORS or insns[0][2] == "call"):  # call: abort()
                return True
        return False

    def decode(self, start: int, limit: int = MAX_FUNCTION) -> list:
        """Instructions from ``start`` up to the first int3 (padding) or undecodable byte."""
        out = []
        code = self.elf.read(start, min(limit, self.hi - start))
        for insn in self.md.disasm(code, start):
            if insn.mnemonic == "int3":
                break
            out.append(insn)
        return out


def _split(insns: list, start: int) -> list[list]:
    """Cut a run of instructions into functions where no branch crosses: at an aligned
    instruction after a terminating one (nops in between), when no jump before it lands
    at or after it and no jump after it lands before it."""
    if not insns:
        return []
    end = insns[-1].address + insns[-1].size
    branches = []
    for insn in insns:
        if insn.group(_JUMP) and insn.operands and insn.operands[0].type == _IMM:
            t = insn.operands[0].imm
            if start <= t < end:
                branches.append((insn.address, t))
    cuts = []
    prev_terminal = False
    for i, insn in enumerate(insns):
        if i and prev_terminal and insn.address % _ALIGN == 0 and insn.mnemonic != "nop":
            c = insn.address
            if not any((a < c <= t) or (t < c <= a) for a, t in branches):
                cuts.append(i)
        if insn.mnemonic == "nop":
            continue  # alignment padding keeps the previous instruction's verdict
        prev_terminal = insn.mnemonic in _TERMINATORS
    pieces, last = [], 0
    for i in cuts:
        pieces.append(insns[last:i])
        last = i
    pieces.append(insns[last:])
    return pieces


_ARG_REGS = {"edi": "rdi", "rdi": "rdi", "esi": "rsi", "rsi": "rsi", "edx": "rdx",
             "rdx": "rdx", "ecx": "rcx", "rcx": "rcx", "r8d": "r8", "r8": "r8"}


def _arguments(insns: list, k: int, text: _Text) -> tuple[int | None, dict[str, int]]:
    """Constant argument registers at the call that follows instruction k (the load of
    the file name), simulated from the start of k's block; (call target, registers)."""
    b = k
    while b > 0 and not _is_control(insns[b - 1]):
        b -= 1
    regs: dict[str, int] = {}
    seq, j = insns, b
    for _ in range(64):
        if j >= len(seq):
            return None, regs
        insn = seq[j]
        name = insn.mnemonic
        ops = insn.operands
        if name == "call":
            if ops and ops[0].type == _IMM:
                return ops[0].imm, regs
            return None, regs
        if name == "jmp":
            if not ops or ops[0].type != _IMM:
                return None, regs
            seq, j = text.decode(ops[0].imm, 256), 0
            continue
        if name == "ret":
            return None, regs
        written = {_ARG_REGS.get(insn.reg_name(r)) for r in insn.regs_access()[1]}
        for reg in written - {None}:
            regs.pop(reg, None)
        if name == "mov" and len(ops) == 2 and ops[0].type == _REG and ops[1].type == _IMM:
            reg = _ARG_REGS.get(insn.reg_name(ops[0].reg))
            if reg:
                regs[reg] = ops[1].imm & 0xFFFFFFFF
        elif name == "xor" and len(ops) == 2 and ops[0].type == ops[1].type == _REG \
                and ops[0].reg == ops[1].reg:
            reg = _ARG_REGS.get(insn.reg_name(ops[0].reg))
            if reg:
                regs[reg] = 0
        elif name == "lea" and len(ops) == 2 and ops[1].type == _MEM \
                and insn.reg_name(ops[1].mem.base) == "rip":
            reg = _ARG_REGS.get(insn.reg_name(ops[0].reg))
            if reg:
                regs[reg] = insn.address + insn.size + ops[1].mem.disp
        j += 1
    return None, regs


def _is_control(insn) -> bool:
    return insn.group(_JUMP) or insn.group(_CALL) or insn.group(_RET)


def _loads(insn, targets: set[int]) -> bool:
    """Does this instruction put one of the target addresses in a register?"""
    ops = insn.operands
    if len(ops) != 2 or ops[0].type != _REG:
        return False
    if insn.mnemonic == "mov" and ops[1].type == _IMM:
        return ops[1].imm in targets
    if insn.mnemonic == "lea" and ops[1].type == _MEM and insn.reg_name(ops[1].mem.base) == "rip":
        return insn.address + insn.size + ops[1].mem.disp in targets
    return False


def _functions(elf: ElfFile, targets: list[int], md) -> list[Function]:
    """Every function holding a report from ssl_lib.cc, with its reports and calls."""
    text = _Text(elf, md)
    bias = text.lo - elf.sections[".text"].offset
    wanted = set(targets)
    by_start: dict[int, Function] = {}
    pending: list[tuple[Function, list, int]] = []  # (function, its insns, load index)
    seen_regions: dict[int, list] = {}
    for ref in _references(elf, targets):
        addr = ref + bias
        if any(f.start <= addr < f.end for f in by_start.values()):
            continue
        region = text.padding_start(addr)
        if region is None:
            continue
        if region not in seen_regions:
            seen_regions[region] = _split(text.decode(region), region)
        for piece in seen_regions[region]:
            first, last = piece[0], piece[-1]
            if not first.address <= addr < last.address + last.size:
                continue
            start = first.address
            if start not in by_start:
                fn = Function(start, last.address + last.size, start == region, piece)
                for k, insn in enumerate(piece):
                    if insn.mnemonic == "call" and insn.operands and insn.operands[0].type == _IMM:
                        fn.calls.add(insn.operands[0].imm)
                    if _loads(insn, wanted):
                        pending.append((fn, piece, k))
                by_start[start] = fn
    # the reporting function is the one most loads of the file name are passed to
    calls: list[tuple[Function, int, int, dict[str, int]]] = []
    for fn, piece, k in pending:
        callee, regs = _arguments(piece, k, text)
        if callee is not None:
            calls.append((fn, piece[k].address, callee, regs))
    if not calls:
        return []
    put_error = Counter(c for _f, _a, c, _r in calls).most_common(1)[0][0]
    for fn, addr, callee, regs in calls:
        if callee != put_error:
            continue
        if regs.get("rdx") in wanted:  # (lib, reason, file, line): unused argument dropped
            lib, reason, line = regs.get("rdi"), regs.get("rsi"), regs.get("rcx")
        elif regs.get("rcx") in wanted:  # (lib, unused, reason, file, line)
            lib, reason, line = regs.get("rdi"), regs.get("rdx"), regs.get("r8")
        else:
            continue
        if lib == ERR_LIB_SSL and reason is not None and line is not None:
            fn.reports.append(Report(addr, reason, line))
    return [f for f in by_start.values() if f.reports]


# --- naming them ------------------------------------------------------------------------


def _only(candidates: list[Function], what: str) -> Function:
    if len(candidates) != 1:
        raise NotLocated(f"{what} not found for sure: {len(candidates)} functions match its "
                         "error reports, expected exactly one")
    return candidates[0]


def _fde_starts(elf: ElfFile) -> set[int]:
    """Function starts listed in ``.eh_frame_hdr`` (datarel sdata4 table), if any."""
    sec = elf.sections.get(".eh_frame_hdr")
    if sec is None or sec.size < 12:
        return set()
    raw = elf.data[sec.offset:sec.offset + sec.size]
    version, _ptr_enc, count_enc, table_enc = raw[0], raw[1], raw[2], raw[3]
    if version != 1 or count_enc != 0x03 or table_enc != 0x3B:  # udata4 count, datarel sdata4
        return set()
    (count,) = struct.unpack_from("<I", raw, 8)
    count = min(count, (len(raw) - 12) // 8)
    return {sec.addr + loc for loc, _fde in struct.iter_unpack("<ii", raw[12:12 + 8 * count])}


def _runs_into_report(fn: Function) -> bool:
    """Can no other function hide between the padding and the function's first report?
    One would start at an aligned address right after an instruction a function can end
    with (ret, jmp, ud2, a call that does not return; nops between)."""
    first = min(r.addr for r in fn.reports)
    may_end = False
    for insn in fn.insns:
        if insn.address >= first:
            return True
        if insn.mnemonic == "nop":
            continue
        if may_end and insn.address % _ALIGN == 0:
            return False
        may_end = insn.mnemonic in _TERMINATORS or insn.mnemonic == "call"
    return False


def _called_directly(elf: ElfFile, target: int) -> bool:
    """Is there a ``call rel32`` to target anywhere in .text? (the slow, sure check:
    ~0.5 s for 130 MB, done only when the layout leaves a doubt)"""
    text = elf.sections[".text"]
    data, lo, hi = elf.data, text.offset, text.offset + text.size
    bias = text.addr - text.offset
    window = 1 << 24
    for start in range(lo, hi, window):
        stop = min(hi, start + window)
        tops = {((target - (a + bias + 5)) & 0xFFFFFFFF) >> 24 for a in (start, stop - 1)}
        pattern = re.compile(rb"\xe8...[" + b"".join(re.escape(bytes([t])) for t in sorted(tops))
                             + b"]", re.S)
        for m in pattern.finditer(data, start, min(hi, stop + 4)):
            if m.start() >= stop:
                break
            (rel,) = struct.unpack_from("<i", data, m.start() + 1)
            if m.start() + bias + 5 + rel == target:
                return True
    return False


def _check_start(elf: ElfFile, fn: Function, what: str, fdes: set[int],
                 called_by: Function | None = None) -> None:
    """Refuse a function start that is not certain (see the module docstring)."""
    first = min(r.addr for r in fn.reports)
    if fdes and any(fn.start < s <= first for s in fdes):
        raise NotLocated(f".eh_frame_hdr lists a function start inside {what}")
    if called_by is not None and fn.start in called_by.calls:
        return  # a direct call target: a function start for certain
    if not fn.from_padding:
        raise NotLocated(f"the start of {what} follows no padding and is no call target")
    if fn.start in fdes or _runs_into_report(fn) or _called_directly(elf, fn.start):
        return
    raise NotLocated(f"the start of {what} is uncertain: code that may end another "
                     "function lies before its first report, and nothing calls it directly")


def locate(path: str | os.PathLike) -> Located:
    """Find the functions (raises NotLocated or ElfError)."""
    began = time.monotonic()
    md = _capstone()
    with ElfFile(path) as elf:
        if ".text" not in elf.sections:
            raise NotLocated("the file has no .text section")
        targets = _source_paths(elf)
        if not targets:
            raise NotLocated("no ssl/ssl_lib.cc path in .rodata")
        funcs = _functions(elf, targets, md)
        if not funcs:
            raise NotLocated("no error report from ssl/ssl_lib.cc was found in the code")
        write = _only([f for f in funcs if {SSL_R_BAD_LENGTH, ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED,
                                            SSL_R_UNINITIALIZED} <= f.reasons], "SSL_write")
        write_line = min(write.lines(ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED))
        read_impls = {f.start: f for f in funcs
                      if SSL_R_UNINITIALIZED in f.reasons and f is not write}
        readers = [(line, f) for f in funcs for line in f.lines(ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED)
                   if line < write_line and f.calls & read_impls.keys()]
        if not readers:
            raise NotLocated("no function looks like SSL_read")
        last = max(line for line, _f in readers)
        read = _only(list({id(f): f for line, f in readers if line == last}.values()), "SSL_read")
        impl = _only([read_impls[s] for s in read.calls & read_impls.keys()], "ssl_read_impl")
        handshake = _only([f for f in funcs if SSL_R_CONNECTION_TYPE_NOT_SET in f.reasons
                           and f.start in write.calls], "SSL_do_handshake")
        fdes = _fde_starts(elf)
        _check_start(elf, write, "SSL_write", fdes)
        _check_start(elf, read, "SSL_read", fdes)
        _check_start(elf, handshake, "SSL_do_handshake", fdes, called_by=write)
        named = (("SSL_write", write), ("SSL_read", read), ("SSL_do_handshake", handshake),
                 ("ssl_read_impl", impl))
        first = {name: elf.read(f.start, 16) for name, f in named}
        reports = {name: tuple(sorted((r.reason, r.line) for r in f.reports)) for name, f in named}
        return Located(write.start, read.start, handshake.start, impl.start, first, reports,
                       len(funcs), time.monotonic() - began)


def _entry_why(name: str, code: bytes) -> str:
    how = "emulated entry" if emulated(code) else "single-stepped entry (~9 us per call)"
    return f"{name}, found by its error reports ({how})"


def _plan(path: str) -> list[ProbeSite] | str:
    try:
        found = locate(path)
    except NotLocated as exc:
        return str(exc)
    except (ElfError, OSError) as exc:
        return f"unreadable: {exc}"
    fb = found.first_bytes
    return [
        ProbeSite(path, "tls_write_enter", "", found.ssl_write, found.ssl_write, False,
                  _entry_why("SSL_write", fb["SSL_write"])),
        ProbeSite(path, "tls_write_return", "", found.ssl_write, found.ssl_write, True, ""),
        ProbeSite(path, "tls_read_enter", "", found.ssl_read, found.ssl_read, False,
                  _entry_why("SSL_read", fb["SSL_read"])),
        ProbeSite(path, "tls_read_return", "", found.ssl_read, found.ssl_read, True, ""),
        ProbeSite(path, "tls_handshake_enter", "", found.ssl_do_handshake,
                  found.ssl_do_handshake, False,
                  _entry_why("SSL_do_handshake", fb["SSL_do_handshake"])),
    ]


# One answer per file (and per content: a second install of the same Claude Code).
_PLANS = PerFile(_plan, limit=64)


def plan(path: str | os.PathLike) -> list[ProbeSite]:
    """The uprobes for one file carrying BoringSSL; NotLocated when not found for sure."""
    answer = _PLANS.get(path, "the file could not be read")
    if isinstance(answer, str):
        raise NotLocated(answer)
    return [dataclasses.replace(site, path=str(path)) for site in answer]
