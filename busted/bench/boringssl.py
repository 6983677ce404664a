"""`busted bench boringssl`: what the BoringSSL probes cost a Bun program per TLS call.

Claude Code and every Bun-built program carry BoringSSL without symbols; busted probes
its SSL_write / SSL_read (entry and return) found by their error reports
(:mod:`busted.kernel.tls.boringssl`). The traced program here is a small Bun script
(``bun_tls_client.mjs``, a fresh process per measurement) against the loopback TLS
server of :mod:`busted.bench.tls_workload` (SNI api.openai.com, LLM-like requests, so
the monitor keeps copying as it would for a real agent):

- CPU time per 100-byte ``socket.write`` (one SSL_write each) into the server's sink;
- CPU time per 100-byte record read (one SSL_read each; records sent in bursts while
  the client sleeps, so they wait in the socket).

Three configurations alternate round after round (order reversed every other round, as
in :mod:`busted.bench.probes`): no monitor; the floor (an *empty* uprobe and uretprobe
on the same two functions, bound to the client: what any probe there costs); the real
``busted monitor --source bpf`` (its probes and its workers on the same two cores).
Figures are medians over rounds of the per-round differences; the floor's hit counts
give the SSL calls per write and per record.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
from pathlib import Path
from typing import Any

import click

from busted.bench.kernel_cost import PerPidProbes
from busted.bench.measure import (
    BenchRun,
    MonitorRun,
    alternating,
    event_totals,
    make_workdir,
    median,
    monitor_counters,
    monitor_running,
    print_busy_warning,
    run_client,
)
from busted.bench.probes import Bench
from busted.errors import BenchError
from busted.kernel.tls import boringssl
from busted.kernel.tls.site import NotLocated

CLIENT = Path(__file__).resolve().parent / "bun_tls_client.mjs"
AGENT_BUNS = "/var/cache/busted/agents/bun-*/package/bin/bun"
# Empty programs but for a hit counter per function (0: SSL_write, 1: SSL_read).
EMPTY_PROBES = """
BPF_ARRAY(hits, u64, 2);
static int hit(int i) {
    u64 *n = hits.lookup(&i);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
int empty_write(struct pt_regs *ctx) { return hit(0); }
int empty_read(struct pt_regs *ctx) { return hit(1); }
int empty_return(struct pt_regs *ctx) { return 0; }
"""


def find_bun(given: str | None) -> str:
    """The Bun binary to measure: --bun, else the newest pinned one, else bun on PATH."""
    if given:
        return given
    def version(path: str) -> tuple[int, ...]:
        digits = path.split("/bun-")[-1].split("/")[0].split(".")
        return tuple(int(d) for d in digits if d.isdigit())
    pinned = sorted(glob.glob(AGENT_BUNS), key=version)
    found = pinned[-1] if pinned else shutil.which("bun")
    if not found:
        raise BenchError("No Bun binary found: pass --bun PATH, or run `make setup` "
                         "(it installs the pinned Bun releases).")
    return found


class Floor:
    """Empty uprobes + uretprobes on SSL_write and SSL_read of one Bun, per client pid."""

    def __init__(self, bun: str, located: boringssl.Located) -> None:
        from bcc import BPF

        self.bpf = BPF(text=EMPTY_PROBES)
        self.bun = bun.encode()
        self.sites = ((located.ssl_write, b"empty_write"), (located.ssl_read, b"empty_read"))
        self._probes = PerPidProbes(self.bpf)

    def hits(self) -> tuple[int, int]:
        table = self.bpf[b"hits"]
        return table[0].value, table[1].value

    def attach(self, pid: int) -> None:
        from busted.kernel.tls.site import ProbeSite

        bun = self.bun.decode()
        sites = []
        for addr, fn in self.sites:
            sites += [ProbeSite(bun, fn.decode(), "", addr, addr),
                      ProbeSite(bun, "empty_return", "", addr, addr, ret=True)]
        self._probes.attach(bun, pid, sites)

    def detach(self, pid: int) -> None:
        self._probes.detach(pid)


def _saw_tls(event: dict[str, Any]) -> bool:
    """TLS plaintext (not just a connect): what shows the client's probes are working."""
    return str(event.get("event_type", "")).startswith("TLS_DATA")


def measure_client(bun: str, bench: Bench, calls: int, monitor: MonitorRun | None = None,
                   floor: Floor | None = None) -> dict[str, Any]:
    """One measurement in a fresh Bun client process."""
    argv = [bun, str(CLIENT), "--port", str(bench.port), "--cafile", str(bench.ca),
            "--calls", str(calls)]
    name = f"the Bun client ({bun})"
    seen = monitor and functools.partial(monitor.saw, match=_saw_tls)
    if floor is None:
        return run_client(argv, name, seen=seen)
    hits: dict[str, tuple[int, int]] = {}

    def attach(pid: int) -> None:
        floor.attach(pid)
        hits["before"] = floor.hits()

    def count() -> None:  # at the result, before the client exits
        hits["after"] = floor.hits()

    result = run_client(argv, name, seen=seen, attach=attach, detach=floor.detach,
                        around=(lambda: None, count))
    result["floor_hits"] = [after - before for after, before
                            in zip(hits["after"], hits["before"], strict=True)]
    return result


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    per_call: dict[str, Any] = {}
    for fn, key, index in (("SSL_write", "write", 0), ("SSL_read", "read", 1)):
        us, wall = f"{key}_us", f"{key}_wall_us"
        per_call[fn] = {
            "no_monitor_us": median([r["off"][us] for r in rounds]),
            "monitor_us": median([r["on"][us] for r in rounds]),
            "added_us": median([r["on"][us] - r["off"][us] for r in rounds]),
            "floor_added_us": median([r["floor"][us] - r["off"][us] for r in rounds]),
            "wall_added_us": median([r["on"][wall] - r["off"][wall] for r in rounds]),
            # SSL calls per 100-byte write / record, counted by the floor's probes
            "calls_per_unit": median([r["floor"]["floor_hits"][index]
                                       / r["floor"]["calls" if key == "write" else "records"]
                                       for r in rounds]),
        }
    monitors = [r["monitor"] for r in rounds]
    return {
        "per_call": per_call,
        "events": event_totals(monitors),
        "all_clients_captured": all(r["on"].get("captured") for r in rounds),
        "monitor_ready_s": [r["monitor_ready_s"] for r in rounds],
        "rounds": rounds,
        "cpus": os.cpu_count(),
    }


def print_report(report: dict[str, Any]) -> None:
    echo = click.echo
    print_busy_warning(report, "re-run on a quiet machine.")
    echo(f"Bun: {report['bun']}  (functions found in {report['locate_s']:.2f} s)")
    echo("Per call, CPU time of the Bun client (µs; 'added' = with minus without, median "
         "of rounds):")
    for fn, f in report["per_call"].items():
        echo(f"  {fn:<10} {f['no_monitor_us']:6.2f} -> {f['monitor_us']:6.2f}  added "
             f"{f['added_us']:+.2f} (wall {f['wall_added_us']:+.2f})   (floor: empty uprobe + "
             f"uretprobe {f['floor_added_us']:+.2f}; {f['calls_per_unit']:.2f} calls per "
             "100-byte " + ("write)" if fn == "SSL_write" else "record)"))
    ev = report["events"]
    echo(f"Events (all monitor runs): produced {ev['produced']:,}, dropped {ev['dropped']:,}, "
         f"lost {ev['lost']:,} (ring buffer {ev['kernel_lost']:,}); every client captured: "
         f"{'yes' if report['all_clients_captured'] else 'NO'}")


@click.command(epilog="""\b
Examples:
  sudo busted bench boringssl
  sudo busted bench boringssl --rounds 5 --json > boringssl.json
  sudo busted bench boringssl --bun ~/.bun/bin/bun
""")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Off/floor/on rounds (medians are taken over rounds).")
@click.option("--calls", type=click.IntRange(1000), default=20_000, show_default=True,
              help="SSL_write calls (and records read) timed per measurement.")
@click.option("--bun", "bun_path", metavar="PATH",
              help="The Bun binary (default: the newest pinned one, else bun on PATH).")
@click.option("--monitor-arg", multiple=True, metavar="ARG",
              help="Extra argument for the monitor (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def boringssl_bench(rounds: int, calls: int, bun_path: str | None,
                    monitor_arg: tuple[str, ...], as_json: bool) -> int:
    """What the BoringSSL probes cost a Bun program: µs per SSL_write / SSL_read next to
    this machine's uprobe floor (root, loopback only)."""
    run = BenchRun("boringssl", as_json)
    say = run.say
    bun = find_bun(bun_path)
    try:
        located = boringssl.locate(bun)
    except NotLocated as exc:
        raise BenchError(f"BoringSSL's functions were not found in {bun}: {exc}") from exc
    workdir = make_workdir()
    bench = Bench(workdir, calls, 1.0, 1.0, say)  # its loopback TLS server
    try:
        floor = Floor(bun, located)
        results: list[dict[str, Any]] = [{} for _ in range(rounds)]
        for i, phase in alternating(rounds, ("off", "floor", "on"), say):
            result = results[i]
            if phase == "off":
                result["off"] = measure_client(bun, bench, calls)
            elif phase == "floor":
                result["floor"] = measure_client(bun, bench, calls, floor=floor)
            else:
                with monitor_running(workdir, f"m{i}", monitor_arg) as monitor:
                    result["on"] = measure_client(bun, bench, calls, monitor=monitor)
                result["monitor"] = monitor_counters(monitor.summary)
                result["monitor_ready_s"] = round(monitor.ready_s, 1)
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report = summarize(results)
    report.update(bun=bun, locate_s=round(located.seconds, 3))
    return run.finish(report, print_report)
