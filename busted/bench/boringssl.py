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

import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from busted.bench.kernel_cost import BenchError
from busted.bench.probes import Bench, MonitorRun, monitor_counters
from busted.errors import PrivilegeError
from busted.kernel.tls import boringssl
from busted.kernel.tls.site import NotLocated

CLIENT = Path(__file__).resolve().parent / "bun_tls_client.mjs"
AGENT_BUNS = "/var/cache/busted/agents/bun-*/package/bin/bun"
CAPTURE_TIMEOUT_S = 20
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

    def hits(self) -> tuple[int, int]:
        table = self.bpf[b"hits"]
        return table[0].value, table[1].value

    def attach(self, pid: int) -> None:
        for addr, fn in self.sites:
            self.bpf.attach_uprobe(name=self.bun, addr=addr, fn_name=fn, pid=pid)
            self.bpf.attach_uretprobe(name=self.bun, addr=addr, fn_name=b"empty_return", pid=pid)

    def detach(self, pid: int) -> None:
        for addr, _fn in self.sites:
            for detach in (self.bpf.detach_uprobe, self.bpf.detach_uretprobe):
                try:
                    detach(name=self.bun, addr=addr, pid=pid)
                except Exception:  # noqa: BLE001 - the client is gone; its probe went with it
                    pass


def _saw_tls(monitor: MonitorRun, pid: int, timeout_s: float) -> bool:
    """True once the monitor published TLS plaintext of ``pid`` (not just its connects)."""
    from busted import schema

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not monitor.sub.poll(100):
            continue
        _, frame = monitor.sub.recv_multipart()
        if any(e.get("pid") == pid and str(e.get("event_type", "")).startswith("TLS_DATA")
               for e in schema.decode_batch(frame)):
            return True
    return False


def run_client(bun: str, bench: Bench, calls: int, monitor: MonitorRun | None = None,
               floor: Floor | None = None) -> dict[str, Any]:
    """One measurement in a fresh Bun client process."""
    argv = [bun, str(CLIENT), "--port", str(bench.port), "--cafile", str(bench.ca),
            "--calls", str(calls)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    hits_before = (0, 0)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise BenchError(f"the Bun client ({bun}) failed to start")
        captured = None
        if monitor is not None:
            captured = _saw_tls(monitor, proc.pid, 2.0)
            deadline = time.monotonic() + CAPTURE_TIMEOUT_S
            while not captured and time.monotonic() < deadline:
                proc.stdin.write("warm\n")
                proc.stdin.flush()
                proc.stdout.readline()
                captured = _saw_tls(monitor, proc.pid, 0.5)
        if floor is not None:
            floor.attach(proc.pid)
            hits_before = floor.hits()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        hits_after = floor.hits() if floor is not None else (0, 0)
        proc.wait(60)
    finally:
        if floor is not None:
            floor.detach(proc.pid)
        if proc.poll() is None:
            proc.kill()
    if not line.startswith("{"):
        raise BenchError(f"the Bun client produced no result (exit {proc.returncode})")
    result = json.loads(line)
    if captured is not None:
        result["captured"] = captured
    if floor is not None:
        result["floor_hits"] = [after - before for after, before in zip(hits_after, hits_before, strict=True)]
    return result


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    per_call: dict[str, Any] = {}
    for fn, key, index in (("SSL_write", "write", 0), ("SSL_read", "read", 1)):
        us, wall = f"{key}_us", f"{key}_wall_us"
        per_call[fn] = {
            "no_monitor_us": _median([r["off"][us] for r in rounds]),
            "monitor_us": _median([r["on"][us] for r in rounds]),
            "added_us": _median([r["on"][us] - r["off"][us] for r in rounds]),
            "floor_added_us": _median([r["floor"][us] - r["off"][us] for r in rounds]),
            "wall_added_us": _median([r["on"][wall] - r["off"][wall] for r in rounds]),
            # SSL calls per 100-byte write / record, counted by the floor's probes
            "calls_per_unit": _median([r["floor"]["floor_hits"][index]
                                       / r["floor"]["calls" if key == "write" else "records"]
                                       for r in rounds]),
        }
    monitors = [r["monitor"] for r in rounds]
    return {
        "per_call": per_call,
        "events": {key: sum(m.get(key, 0) for m in monitors)
                   for key in ("produced", "dropped", "lost", "kernel_lost")},
        "all_clients_captured": all(r["on"].get("captured") for r in rounds),
        "monitor_ready_s": [r["monitor_ready_s"] for r in rounds],
        "rounds": rounds,
        "cpus": os.cpu_count(),
    }


def print_report(report: dict[str, Any]) -> None:
    echo = click.echo
    load = report["load_average"]
    if max(load["start"], load["end"]) > report["cpus"]:
        echo(f"WARNING: the machine was busy (load average {load['start']} at the start, "
             f"{load['end']} at the end, {report['cpus']} CPUs): re-run on a quiet machine.")
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
    if os.geteuid() != 0:
        raise PrivilegeError("busted bench boringssl loads eBPF programs and needs root.",
                             "Run it with sudo.")
    say = (lambda msg: None) if as_json else (lambda msg: click.echo(msg, err=True))
    bun = find_bun(bun_path)
    try:
        located = boringssl.locate(bun)
    except NotLocated as exc:
        raise BenchError(f"BoringSSL's functions were not found in {bun}: {exc}") from exc
    load_start = round(os.getloadavg()[0], 2)
    workdir = Path(tempfile.mkdtemp(prefix="busted-bench-", dir="/tmp"))
    workdir.chmod(0o711)  # the unprivileged worker account must traverse it
    bench = Bench(workdir, calls, 1.0, 1.0, say)  # its loopback TLS server
    try:
        floor = Floor(bun, located)
        results = []
        for i in range(rounds):
            result: dict[str, Any] = {}
            for phase in (("off", "floor", "on") if i % 2 == 0 else ("on", "floor", "off")):
                say(f"round {i + 1}/{rounds}: {phase} ...")
                if phase == "off":
                    result["off"] = run_client(bun, bench, calls)
                elif phase == "floor":
                    result["floor"] = run_client(bun, bench, calls, floor=floor)
                else:
                    monitor = MonitorRun(workdir, f"m{i}", monitor_arg)
                    monitor.start()
                    try:
                        result["on"] = run_client(bun, bench, calls, monitor=monitor)
                    finally:
                        result["monitor"] = monitor_counters(monitor.stop())
                    result["monitor_ready_s"] = round(monitor.ready_s, 1)
            results.append(result)
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report = summarize(results)
    report.update(bun=bun, locate_s=round(located.seconds, 3),
                  command="busted bench boringssl " + " ".join(sys.argv[3:]),
                  load_average={"start": load_start, "end": round(os.getloadavg()[0], 2)})
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0
