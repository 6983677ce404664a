"""What one traced TLS call pays in the kernel, for `busted bench probes`, `go-tls` and
`rustls`.

- :class:`EmptyUprobes`: *empty* uprobes (a hit counter), bound to one client pid, at
  the sites a bench names (:func:`ssl_sites`: ``SSL_write_ex`` / ``SSL_read_ex`` at the
  function entry or at +4): the machine's floor, what any probe there costs before the
  monitor does any work;
- :class:`KernelOnly`: the real probes (:class:`busted.sources.kernel.KernelSource`) in this
  process with no pipeline behind them, drained by a thread, and the kernel's own run
  counters switched on (``kernel.bpf_stats_enabled``), so the BPF time of each program
  per call is read without the noise of clocks in a busy machine.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from busted.errors import BenchError

FUNCTIONS = ("SSL_write_ex", "SSL_read_ex")
# "Empty" but for a hit counter, so the floor is known to have fired once per call.
EMPTY_PROBE = """
BPF_ARRAY(hits, u64, 1);
int empty(struct pt_regs *ctx) {
    int zero = 0;
    u64 *n = hits.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
"""
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def _vaddr_to_offset(path: str, vaddr: int) -> int:
    """File offset of a virtual address of an ELF64 file (through its PT_LOAD headers)."""
    with open(path, "rb") as f:
        header = f.read(64)
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", table, i * phentsize)
        if p_type == 1 and p_vaddr <= vaddr < p_vaddr + p_filesz:
            return vaddr - p_vaddr + p_offset
    raise BenchError(f"address {vaddr:#x} is in no loaded segment of {path}")


def call_at_plus4(lib: str) -> bool:
    """True when both functions have a `call rel32` at +4 (a cheap, emulated probe site)."""
    from bcc import BPF

    for name in FUNCTIONS:
        found = BPF.get_user_functions_and_addresses(lib, f"^{name}$")
        if not found:
            return False
        offset = _vaddr_to_offset(lib, found[0][1])
        with open(lib, "rb") as f:
            f.seek(offset + 4)
            if f.read(1) != b"\xe8":
                return False
    return True


class PerPidProbes:
    """A bench's own probes bound to one client pid at a time, attached like the
    monitor's (:class:`busted.kernel.uprobes.Uprobes`), so both can share a function."""

    def __init__(self, bpf: Any) -> None:
        self.bpf = bpf
        self._attached: dict[int, Any] = {}  # pid -> its Uprobes

    def attach(self, binary: str, pid: int, sites: list[Any]) -> None:
        from busted.kernel.uprobes import Uprobes

        probes = Uprobes(self.bpf, sessions=False)
        self._attached[pid] = probes
        _, errors = probes.attach(binary, sites, (pid,))
        if errors:
            raise BenchError(f"could not place the empty uprobes: {errors[0]}")

    def detach(self, pid: int) -> None:
        probes = self._attached.pop(pid, None)
        if probes is not None:
            probes.close()


class EmptyUprobes:
    """Empty uprobes (a hit counter) bound to one client pid at a time. A site is
    ``{"sym": name, "sym_off": n}`` or ``{"addr": virtual address}``."""

    def __init__(self) -> None:
        from bcc import BPF

        self.bpf = BPF(text=EMPTY_PROBE)
        self._probes = PerPidProbes(self.bpf)

    def hits(self) -> int:
        return sum(v.value for v in self.bpf["hits"].values())

    def attach(self, binary: str, pid: int, sites: list[dict[str, Any]]) -> None:
        self._probes.attach(binary, pid, [_empty_site(binary, s) for s in sites])

    def detach(self, binary: str, pid: int, sites: list[dict[str, Any]]) -> None:
        self._probes.detach(pid)


def _empty_site(binary: str, site: dict[str, Any]) -> Any:
    from busted.kernel.tls.elf import read_symbols
    from busted.kernel.tls.site import ProbeSite

    if "addr" in site:
        return ProbeSite(binary, "empty", "", site["addr"], site["addr"])
    sym, offset = site["sym"], site.get("sym_off", 0)
    found = read_symbols(binary, [sym]).symbols.get(sym)
    if found is None:
        raise BenchError(f"{binary} has no symbol {sym}")
    return ProbeSite(binary, "empty", sym, offset, found + offset)


def ssl_sites(offset: int) -> list[dict[str, Any]]:
    """The floor's sites for `busted bench probes`: ``offset`` bytes into SSL_write_ex and
    SSL_read_ex."""
    return [{"sym": name, "sym_off": offset} for name in FUNCTIONS]


def libssl_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split()[-1]
        if "/libssl.so" in path:
            return path
    raise BenchError(f"client {pid} has no libssl mapped")


class KernelOnly:
    """KernelSource in this process, everything it captures drained and dropped.

    No classify means no verdicts: every connection is copied, the costly path the
    monitor keeps for the conversations it exists to see."""

    def __init__(self, max_copy: int) -> None:
        from busted.config import MonitorConfig
        from busted.sources.kernel import KernelSource

        self.source = KernelSource(MonitorConfig(source="bpf", max_copy=max_copy))
        self.pids: set[int] = set()
        self.marks: dict[str, dict[str, tuple[int, int]]] = {}  # see `around`
        self.counters: dict[str, int] = {}  # the source's counters, once stopped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._stats_before = ""

    def start(self) -> None:
        self._stats_before = enable_bpf_stats()
        self.source.start()
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            for event in self.source.poll(0.05):
                self.pids.add(event.get("pid"))

    def saw_pid(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while pid not in self.pids:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def program_stats(self) -> dict[str, tuple[int, int]]:
        return self.source.program_stats()

    def mark(self, name: str) -> None:
        self.marks[name] = self.program_stats()

    @property
    def around(self) -> tuple[Any, Any]:
        """Marks "before" and "after" the measured part of a run (see :meth:`cost`)."""
        return (lambda: self.mark("before"), lambda: self.mark("after"))

    def cost(self, calls: int) -> dict[str, Any]:
        """:func:`bpf_cost` between the "before" and "after" marks."""
        return bpf_cost(self.marks.get("before", {}), self.marks.get("after", {}), calls)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(5)
        self.counters = self.source.stats()
        self.source.close()
        restore_bpf_stats(self._stats_before)
        return self.counters


@contextmanager
def probes_alone(max_copy: int) -> Iterator[KernelOnly]:
    """The real probes in this process (:class:`KernelOnly`), started for the ``with``
    block and stopped after it (their counters are then in ``.counters``)."""
    # The source logs every file it probes; the monitor's logs are not a bench's report.
    logging.getLogger("busted.capture").setLevel(logging.WARNING)
    kernel = KernelOnly(max_copy)
    kernel.start()
    try:
        yield kernel
    finally:
        kernel.stop()


def enable_bpf_stats() -> str:
    """Switch on the kernel's per-program run counters (two clock reads per BPF run while
    a bench measures); returns the setting to restore."""
    before = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1")
    return before


def restore_bpf_stats(before: str) -> None:
    if before:
        BPF_STATS.write_text(before)


def bpf_cost(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
             calls: int) -> dict[str, Any]:
    """Per program that ran: runs per client call and ns per run; and the BPF ns of one
    ``SSL_write_ex`` / ``SSL_read_ex`` call (its entry program plus its return program,
    or twice its session program's runs: KernelOnly copies every call, so each runs at
    entry and return).

    Runs are counted host-wide: the loopback server's TLS calls (and anyone else's) run
    the same programs, so runs per client call read high (~1 per program when both ends
    are traced); ns per run does not depend on whose call it was."""
    programs = {}
    for name, (runs, ns) in sorted(after.items()):
        runs0, ns0 = before.get(name, (0, 0))
        if runs - runs0 <= 0:
            continue
        d_runs, d_ns = runs - runs0, ns - ns0
        programs[name] = {"runs_per_call": round(d_runs / max(1, calls), 3),
                          "ns_per_run": round(d_ns / d_runs)}
    per_call = {}
    for fn, direction in (("SSL_write_ex", "write"), ("SSL_read_ex", "read")):
        enter, ret = programs.get(f"tls_{direction}_ex_enter"), programs.get(f"tls_{direction}_return")
        session = programs.get(f"tls_{direction}_ex_session")
        if enter and ret:
            per_call[fn] = enter["ns_per_run"] + ret["ns_per_run"]
        elif session:  # one program at entry and (on a copied call) at return
            per_call[fn] = 2 * session["ns_per_run"]
    return {"bpf_ns_per_call": per_call, "programs": programs}
