"""`busted bench probes`: what the kernel probes cost the programs they trace.

One run alternates, round after round, between no monitor, an *empty* uprobe (the
floor), and the real ``busted monitor --source bpf`` (a subprocess, default text output
to /dev/null), and measures the same loopback TLS workloads in each
(:mod:`busted.bench.tls_workload`, every workload a fresh client process):

- microseconds per ``SSL_write_ex`` / ``SSL_read_ex`` call (100-byte writes into a sink,
  reads of 100-byte records already waiting in the socket), and what the monitor adds,
  on an LLM connection (copied whole) and on an ordinary one (a download host, judged
  uninteresting by the classifier: what most of a host's TLS calls pay);
- the floor of this machine, measured in the same run: an empty bcc uprobe bound to the
  client on the same functions, at their entry (single-stepped: ``sub $x,%rsp``) and, where
  the function has a ``call`` at +4 (Debian's libssl3), there (emulated, much cheaper);
- requests/s ratio (monitor on / off) of a tight request loop with 1 KiB and 16 KiB
  requests, and of an agent-like workload (4 connections, answers streamed over ~20 ms);
- events produced, dropped and lost (ring buffer included) by each monitor run, and the
  CPU the monitor's processes used meanwhile;
- once, after the rounds, the probes alone (KernelSource in this process, no workers)
  with the kernel's per-program run counters: what the BPF programs themselves cost per
  call, apart from the traps and from the workers' CPU (:mod:`busted.bench.kernel_cost`).

Why the real monitor and not KernelSource in-process: what a user pays is the probes
*and* the five workers competing for the same two cores; measuring KernelSource alone
would hide the second part. Precision comes from pairing: each round measures off and on
back to back (order alternating between rounds) and the figures are medians over rounds
of the per-round differences and ratios.

Caveat printed with the figures: the loopback server is a Python/OpenSSL process too, so
under the monitor both ends of each connection are traced; the request-loop ratios are
therefore pessimistic for a client talking to a remote API. The per-call figures are
measured inside the client and do not include the server's share.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from busted.bench.kernel_cost import (
    EmptyUprobes,
    KernelOnly,
    call_at_plus4,
    libssl_of,
    probes_alone,
    ssl_sites,
)
from busted.bench.measure import (
    BenchRun,
    MonitorRun,
    alternating,
    event_totals,
    make_workdir,
    max_copy_of,
    median,
    monitor_counters,
    monitor_running,
    print_busy_warning,
    run_client,
)
from busted.errors import BenchError

# --- one workload in one client process ----------------------------------------------------

class Bench:
    def __init__(self, workdir: Path, calls: int, duration: float, agent_duration: float,
                 say) -> None:
        from busted.bench.tls_workload import ORDINARY_SNI, make_certificates

        self.workdir = workdir
        self.calls = calls
        self.duration = duration
        self.agent_duration = agent_duration
        self.say = say
        self.ca, cert, key = make_certificates(workdir, also=f"DNS:{ORDINARY_SNI}")
        port_file = workdir / "port"
        self.server = subprocess.Popen(
            [sys.executable, "-m", "busted.bench.tls_workload", "serve", "--cert", str(cert),
             "--key", str(key), "--port-file", str(port_file)], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise BenchError("the loopback TLS server did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def close(self) -> None:
        self.server.terminate()
        self.server.wait(10)

    def workloads(self) -> list[tuple[str, list[str]]]:
        # The per-call runs last, the ordinary one first (once judged, its calls are not
        # copied and leave the workers idle): the LLM one's ~120k captures keep the
        # monitor's workers busy for a while after it ends, which would weigh on
        # whatever ran next.
        return [
            ("agent", ["agent", "--duration", str(self.agent_duration)]),
            ("loop_1k", ["loop", "--size", "1024", "--duration", str(self.duration)]),
            ("loop_16k", ["loop", "--size", "16384", "--duration", str(self.duration)]),
            ("percall_ordinary", ["percall", "--ordinary", "--calls", str(self.calls)]),
            ("percall", ["percall", "--calls", str(self.calls)]),
        ]

    def percall(self) -> list[str]:
        return dict(self.workloads())["percall"]

    def run(self, args: list[str], monitor: MonitorRun | KernelOnly | None = None,
            floor: EmptyUprobes | None = None, floor_offset: int = 0,
            around_go: tuple[Callable[[], None], Callable[[], None]] | None = None) -> dict[str, Any]:
        """One workload in a fresh client; ``around_go`` runs just before the measurement
        starts and just after its result arrived."""
        argv = [sys.executable, "-m", "busted.bench.tls_workload", "client", *args,
                "--port", str(self.port), "--cafile", str(self.ca)]
        if floor is None:
            return run_client(argv, f"client {args[0]}", seen=monitor and monitor.saw_pid,
                              around=around_go)
        sites, lib, hits_before = ssl_sites(floor_offset), [], 0

        def attach(pid: int) -> None:
            nonlocal hits_before
            lib.append(libssl_of(pid))
            floor.attach(lib[0], pid, sites)
            hits_before = floor.hits()

        def detach(pid: int) -> None:
            if lib:
                floor.detach(lib[0], pid, sites)

        result = run_client(argv, f"client {args[0]}", seen=monitor and monitor.saw_pid,
                            attach=attach, detach=detach, around=around_go)
        result["floor_hits"] = floor.hits() - hits_before
        return result


# Issue 16's goals for what the monitor adds per call: connections judged uninteresting
# (ordinary traffic, most of a host's) and LLM connections (copied whole)
GOAL_ADDED_US = {"ordinary": 2.0, "llm": 3.0}


def _per_call(rounds: list[dict[str, Any]], workload: str) -> dict[str, Any]:
    """No monitor / monitor / added per call of one per-call workload, medians of rounds."""
    out: dict[str, Any] = {}
    for fn, key in (("SSL_write_ex", "write_us"), ("SSL_read_ex", "read_us")):
        wall = key.replace("_us", "_wall_us")
        out[fn] = {
            "no_monitor_us": median([r["off"][workload][key] for r in rounds]),
            "monitor_us": median([r["on"][workload][key] for r in rounds]),
            "added_us": median([r["on"][workload][key] - r["off"][workload][key]
                                for r in rounds]),
            "wall_added_us": median([r["on"][workload][wall] - r["off"][workload][wall]
                                     for r in rounds]),
        }
    return out


def summarize(rounds: list[dict[str, Any]], floor_call: bool) -> dict[str, Any]:
    per_call = _per_call(rounds, "percall")
    for fn, key in (("SSL_write_ex", "write_us"), ("SSL_read_ex", "read_us")):
        entry = per_call[fn]
        entry["floor_entry_added_us"] = median(
            [r["floor_entry"][key] - r["off"]["percall"][key] for r in rounds])
        if floor_call:
            entry["floor_call_added_us"] = median(
                [r["floor_call"][key] - r["off"]["percall"][key] for r in rounds])
    ratios = {}
    for name in ("loop_1k", "loop_16k", "agent"):
        ratios[name] = {
            "ratio": median([r["on"][name]["requests_per_s"] / r["off"][name]["requests_per_s"]
                              for r in rounds]),
            "no_monitor_rps": median([r["off"][name]["requests_per_s"] for r in rounds]),
            "monitor_rps": median([r["on"][name]["requests_per_s"] for r in rounds]),
        }
    monitors = [r["monitor"] for r in rounds]
    return {
        "per_call": per_call,
        "per_call_ordinary": _per_call(rounds, "percall_ordinary"),
        "goal_added_us": GOAL_ADDED_US,
        "requests_per_s": ratios,
        "events": {
            **event_totals(monitors, ("produced", "dropped", "lost", "kernel_lost", "merged",
                                      "lost_not_merged")),
            "worker_restarts": [m.get("restarts", {}) for m in monitors],
        },
        "all_clients_captured": all(w.get("captured", False) for r in rounds
                                    for w in r["on"].values()),
        "monitor_ready_s": [r["monitor_ready_s"] for r in rounds],
        "monitor_cores": [r.get("monitor_cores") for r in rounds],
        "rounds": rounds,
        "cpus": os.cpu_count(),
    }


def print_report(report: dict[str, Any]) -> None:
    echo = click.echo
    print_busy_warning(report, "the ratios mostly measure the other load. Re-run on a "
                               "quiet machine.")
    echo("Per call, CPU time of the client thread (µs; 'added' = with minus without, "
         "median of rounds).")
    goal = report["goal_added_us"]
    echo(f"On ordinary connections (judged uninteresting; goal: added <= "
         f"{goal['ordinary']:.0f} µs):")
    for fn, f in report["per_call_ordinary"].items():
        echo(f"  {fn:<13} {f['no_monitor_us']:6.1f} -> {f['monitor_us']:6.1f}  "
             f"added {f['added_us']:+.1f} (wall {f['wall_added_us']:+.1f})  "
             f"{'met' if f['added_us'] <= goal['ordinary'] else 'MISSED'}")
    echo(f"On LLM connections (copied whole; goal: added <= {goal['llm']:.0f} µs):")
    for fn, f in report["per_call"].items():
        floor = f"floor: empty uprobe at entry {f['floor_entry_added_us']:+.1f}"
        if "floor_call_added_us" in f:
            floor += f", at the call (+4) {f['floor_call_added_us']:+.1f}"
        echo(f"  {fn:<13} {f['no_monitor_us']:6.1f} -> {f['monitor_us']:6.1f}  "
             f"added {f['added_us']:+.1f} (wall {f['wall_added_us']:+.1f})  "
             f"{'met' if f['added_us'] <= goal['llm'] else 'MISSED'}   ({floor})")
    ko = report.get("kernel_only")
    if ko:
        bpf = ko["bpf"]
        ns = bpf["bpf_ns_per_call"]
        echo(f"  probes alone (no workers): SSL_write_ex "
             f"{report['per_call']['SSL_write_ex']['probes_only_added_us']:+.1f}, SSL_read_ex "
             f"{report['per_call']['SSL_read_ex']['probes_only_added_us']:+.1f}; of which BPF "
             f"programs (kernel counters): SSL_write_ex {ns.get('SSL_write_ex', '?')} ns, "
             f"SSL_read_ex {ns.get('SSL_read_ex', '?')} ns")
        for name, prog in bpf["programs"].items():
            if name.startswith("tls_") and prog["runs_per_call"] >= 0.01:
                echo(f"    {name:<22} {prog['runs_per_call']:.2f} runs/call, "
                     f"{prog['ns_per_run']} ns/run")
    echo("Requests/s, monitor on / off:")
    labels = {"loop_1k": "tight loop, 1 KiB requests", "loop_16k": "tight loop, 16 KiB requests",
              "agent": "agent-like, answers streamed over ~20 ms (goal >= 0.98)"}
    for name, r in report["requests_per_s"].items():
        echo(f"  {labels[name]:<55} {r['ratio']:.3f}  ({r['no_monitor_rps']:.0f} -> "
             f"{r['monitor_rps']:.0f}/s)")
        if "probes_only_ratio" in r:
            echo(f"  {'  ... with the probes alone (no workers, one run)':<55} "
                 f"{r['probes_only_ratio']:.3f}")
    ev = report["events"]
    echo(f"Events (all monitor runs): produced {ev['produced']:,}, dropped {ev['dropped']:,}, "
         f"lost {ev['lost']:,} (ring buffer {ev['kernel_lost']:,}); captures merged into "
         f"reassembled messages {ev['merged']:,}")
    if ev["lost_not_merged"] != ev["lost"]:
        echo(f"  (the monitor's 'lost' counts merged captures too: really lost "
             f"{ev['lost_not_merged']:,})")
    restarts = [r for r in ev["worker_restarts"] if r]
    echo(f"Worker restarts during the runs: {restarts or 'none'}; every client captured: "
         f"{'yes' if report['all_clients_captured'] else 'NO'}")
    echo(f"CPU cores used by the monitor while measured: {report['monitor_cores']} "
         f"(of {report['cpus']})")
    echo("Note: the loopback server is traced too, so the loop ratios count both ends.")


@click.command(epilog="""\b
Examples:
  sudo busted bench probes
  sudo busted bench probes --json > probes.json
  sudo busted bench probes --rounds 5 --monitor-arg=--max-copy=65536
""")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Off/floor/on rounds (medians are taken over rounds).")
@click.option("--calls", type=click.IntRange(1000), default=10_000, show_default=True,
              help="SSL_write_ex and SSL_read_ex calls timed per measurement.")
@click.option("--duration", type=float, default=2.0, show_default=True,
              help="Seconds of each tight request loop.")
@click.option("--agent-duration", type=float, default=4.0, show_default=True,
              help="Seconds of the agent-like workload.")
@click.option("--monitor-arg", multiple=True, metavar="ARG",
              help="Extra argument for the monitor (repeatable), e.g. --monitor-arg=--max-copy=65536.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def probes(rounds: int, calls: int, duration: float, agent_duration: float,
           monitor_arg: tuple[str, ...], as_json: bool) -> int:
    """What the kernel probes cost traced programs: µs per TLS call next to this machine's
    uprobe floor, and requests/s ratios with the monitor on vs off (root, loopback only)."""
    run = BenchRun("probes", as_json)
    say = run.say
    workdir = make_workdir()
    bench = Bench(workdir, calls, duration, agent_duration, say)
    try:
        floor = EmptyUprobes()
        probe_lib = libssl_of_python()
        floor_call = call_at_plus4(probe_lib)
        results: list[dict[str, Any]] = [{} for _ in range(rounds)]
        for i, phase in alternating(rounds, ("off", "floor", "on"), say):
            result = results[i]
            if phase == "off":
                result["off"] = {name: bench.run(args) for name, args in bench.workloads()}
            elif phase == "floor":
                percall = bench.percall()
                result["floor_entry"] = bench.run(percall, floor=floor, floor_offset=0)
                if floor_call:
                    result["floor_call"] = bench.run(percall, floor=floor, floor_offset=4)
            else:
                with monitor_running(workdir, f"m{i}", monitor_arg) as monitor:
                    result["on"] = {name: bench.run(args, monitor=monitor)
                                    for name, args in bench.workloads()}
                    result["monitor_cores"] = monitor.cores_used()
                result["monitor"] = monitor_counters(monitor.summary)
                result["monitor_ready_s"] = round(monitor.ready_s, 1)
                result["monitor_warnings"] = monitor.warnings()[:20]
        say("probes alone: KernelSource in this process, the kernel's BPF run counters ...")
        kernel_only = measure_kernel_only(bench, max_copy_of(monitor_arg))
    finally:
        bench.close()
    report = summarize(results, floor_call)
    report["kernel_only"] = kernel_only
    for fn, key in (("SSL_write_ex", "write_us"), ("SSL_read_ex", "read_us")):
        report["per_call"][fn]["probes_only_added_us"] = round(
            kernel_only[key] - report["per_call"][fn]["no_monitor_us"], 3)
    agent = report["requests_per_s"]["agent"]
    agent["probes_only_ratio"] = round(kernel_only["agent_rps"] / agent["no_monitor_rps"], 3)
    return run.finish(report, print_report)


def measure_kernel_only(bench: Bench, max_copy: int) -> dict[str, Any]:
    """The per-call workload under the probes alone, with each program's BPF time."""
    with probes_alone(max_copy) as kernel:
        result = bench.run(bench.percall(), monitor=kernel, around_go=kernel.around)
        # The agent-like workload too: its ratio without the workers separates what the
        # probes cost from what the workers' CPU costs on a small machine.
        agent = bench.run(dict(bench.workloads())["agent"], monitor=kernel)
    return {
        "write_us": round(result["write_us"], 3),
        "read_us": round(result["read_us"], 3),
        "captured": result.get("captured"),
        "bpf": kernel.cost(result.get("total_calls", 0)),
        "agent_rps": round(agent["requests_per_s"], 1),
        "lost": kernel.counters.get("lost", 0),
    }


def libssl_of_python() -> str:
    """The libssl this Python's ssl module loaded (the clients run this Python)."""
    import ssl  # noqa: F401 - loads libssl into this process

    return libssl_of(os.getpid())
