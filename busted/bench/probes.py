"""`busted bench probes`: what the kernel probes cost the programs they trace.

One run alternates, round after round, between no monitor, an *empty* uprobe (the
floor), and the real ``busted monitor --source bpf`` (a subprocess, default text output
to /dev/null), and measures the same loopback TLS workloads in each
(:mod:`busted.bench.tls_workload`, every workload a fresh client process):

- microseconds per ``SSL_write_ex`` / ``SSL_read_ex`` call (100-byte writes into a sink,
  reads of 100-byte records already waiting in the socket), and what the monitor adds;
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

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from busted.bench.kernel_cost import (
    BenchError,
    Floor,
    KernelOnly,
    bpf_cost,
    call_at_plus4,
    libssl_of,
)
from busted.config import DEFAULT_MAX_COPY
from busted.errors import PrivilegeError

READY_TIMEOUT_S = 180  # bcc compiles the probes at start-up; slow on a busy 2-core VM
CAPTURE_TIMEOUT_S = 20  # a new client must show up in the monitor's stream by then


# --- the monitor ---------------------------------------------------------------------------

class MonitorRun:
    """``busted monitor --source bpf`` in a subprocess, and a look at its stream."""

    def __init__(self, workdir: Path, name: str, extra: tuple[str, ...]) -> None:
        self.runtime_dir = workdir / name
        self.summary_path = workdir / f"{name}.json"
        self.argv = [sys.executable, "-m", "busted", "monitor", "--source", "bpf",
                     "--runtime-dir", str(self.runtime_dir), *extra]
        self.stderr: list[str] = []
        self.ready = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.sub = None
        self.ready_s = 0.0
        self._cpu_since = time.monotonic()
        self._cpu_last = {}
        self._cpu_total = 0.0

    def start(self) -> None:
        import zmq

        started = time.monotonic()
        env = dict(os.environ, BUSTED_SUMMARY_JSON=str(self.summary_path))
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=env)
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"events")
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(f"ipc://{self.runtime_dir}/events.sock")
        deadline = started + READY_TIMEOUT_S
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(self.stderr[-30:])
                raise BenchError(f"`busted monitor --source bpf` did not become ready:\n{tail}")
        self.ready_s = time.monotonic() - started
        self._cpu_since = time.monotonic()
        self._cpu_last: dict[int, float] = {}
        self._cpu_total = 0.0
        self._sample_cpu(baseline=True)
        threading.Thread(target=self._cpu_sampler, daemon=True).start()

    def _sample_cpu(self, baseline: bool = False) -> None:
        """Add the CPU time the supervisor and its workers used since the last sample.
        Sampled twice a second so a worker killed and restarted meanwhile still counts
        (its last sample) and its successor counts from zero."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                now = sum(proc.cpu_times()[:2])
            except psutil.Error:
                continue
            before = self._cpu_last.get(proc.pid, now if baseline else 0.0)
            self._cpu_total += max(0.0, now - before)
            self._cpu_last[proc.pid] = now

    def _cpu_sampler(self) -> None:
        while self.proc is not None and self.proc.poll() is None and self.sub is not None:
            time.sleep(0.5)
            self._sample_cpu()

    def cores_used(self) -> float:
        """Average CPU cores the monitor used since it was ready: on a small machine, what
        the traced programs could not use."""
        self._sample_cpu()
        return round(self._cpu_total / max(1e-6, time.monotonic() - self._cpu_since), 2)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr.append(line)
            if " ready" in line.lower() or line.lower().startswith("ready"):
                self.ready.set()

    def saw_pid(self, pid: int, timeout_s: float) -> bool:
        """True once an event of ``pid`` was published (drains the backlog on the way)."""
        from busted import schema

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.sub.poll(100):
                continue
            _, frame = self.sub.recv_multipart()
            if any(e.get("pid") == pid for e in schema.decode_batch(frame)):
                return True
        return False

    def stop(self) -> dict[str, Any]:
        if self.sub is not None:
            self.sub.close()
            self.sub = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.summary_path.exists():
            return json.loads(self.summary_path.read_text())
        return {}


# --- one workload in one client process ----------------------------------------------------

class Bench:
    def __init__(self, workdir: Path, calls: int, duration: float, agent_duration: float,
                 say) -> None:
        from busted.bench.tls_workload import make_certificates

        self.workdir = workdir
        self.calls = calls
        self.duration = duration
        self.agent_duration = agent_duration
        self.say = say
        self.ca, cert, key = make_certificates(workdir)
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
        # The per-call run last: its ~120k captures keep the monitor's workers busy for a
        # while after it ends, which would weigh on whatever ran next.
        return [
            ("agent", ["agent", "--duration", str(self.agent_duration)]),
            ("loop_1k", ["loop", "--size", "1024", "--duration", str(self.duration)]),
            ("loop_16k", ["loop", "--size", "16384", "--duration", str(self.duration)]),
            ("percall", ["percall", "--calls", str(self.calls)]),
        ]

    def percall(self) -> list[str]:
        return dict(self.workloads())["percall"]

    def run(self, args: list[str], monitor: MonitorRun | KernelOnly | None = None,
            floor: Floor | None = None, floor_offset: int = 0,
            around_go: tuple[Callable[[], None], Callable[[], None]] | None = None) -> dict[str, Any]:
        """One workload in a fresh client; ``around_go`` runs just before the measurement
        starts and just after its result arrived."""
        argv = [sys.executable, "-m", "busted.bench.tls_workload", "client", *args,
                "--port", str(self.port), "--cafile", str(self.ca)]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        lib = None
        try:
            if proc.stdout.readline().strip() != "ready":
                raise BenchError(f"client {args[0]} failed to start")
            captured = None
            if monitor is not None:
                # The client was started after the monitor: wait until the monitor shows
                # it is tracing it (its warm-up requests reach the stream).
                captured = monitor.saw_pid(proc.pid, 2.0)
                deadline = time.monotonic() + CAPTURE_TIMEOUT_S
                while not captured and time.monotonic() < deadline:
                    proc.stdin.write("warm\n")
                    proc.stdin.flush()
                    proc.stdout.readline()
                    captured = monitor.saw_pid(proc.pid, 0.5)
            if floor is not None:
                lib = libssl_of(proc.pid)
                floor.attach(lib, proc.pid, floor_offset)
                hits_before = floor.hits()
            if around_go:
                around_go[0]()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if around_go:
                around_go[1]()
            proc.wait(60)
        finally:
            if floor is not None and lib is not None:
                floor.detach(lib, proc.pid, floor_offset)
            if proc.poll() is None:
                proc.kill()
        if not line.startswith("{"):
            raise BenchError(f"client {args[0]} produced no result (exit {proc.returncode})")
        result = json.loads(line)
        if captured is not None:
            result["captured"] = captured
        if floor is not None and lib is not None:
            result["floor_hits"] = floor.hits() - hits_before
        return result


def monitor_counters(summary: dict[str, Any]) -> dict[str, Any]:
    """The loss counters of one monitor run (from its BUSTED_SUMMARY_JSON).

    ``lost`` is the monitor's own figure. It counts every ``seq`` gap seen by output,
    and the captures that classify merged into one reassembled message leave such gaps
    too, so ``lost_not_merged`` takes them out: ring-buffer losses plus events that
    really vanished (in a worker that was killed, say)."""
    workers = summary.get("workers") or {}
    merged = (workers.get("classify") or {}).get("merged") or 0
    missing = (workers.get("output") or {}).get("missing") or 0
    dropped, kernel_lost = summary.get("dropped", 0), summary.get("kernel_lost", 0)
    return {
        "produced": summary.get("produced", 0),
        "delivered": summary.get("delivered", 0),
        "dropped": dropped,
        "lost": summary.get("lost", 0),
        "kernel_lost": kernel_lost,
        "merged": merged,
        "lost_not_merged": kernel_lost + max(0, missing - dropped - merged),
        "restarts": {role: w.get("restarts") for role, w in workers.items() if w.get("restarts")},
    }


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


def summarize(rounds: list[dict[str, Any]], floor_call: bool) -> dict[str, Any]:
    per_call: dict[str, Any] = {}
    for fn, key in (("SSL_write_ex", "write_us"), ("SSL_read_ex", "read_us")):
        off = [r["off"]["percall"][key] for r in rounds]
        entry: dict[str, Any] = {
            "no_monitor_us": _median(off),
            "monitor_us": _median([r["on"]["percall"][key] for r in rounds]),
            "added_us": _median([r["on"]["percall"][key] - r["off"]["percall"][key] for r in rounds]),
            "floor_entry_added_us": _median(
                [r["floor_entry"][key] - r["off"]["percall"][key] for r in rounds]),
        }
        if floor_call:
            entry["floor_call_added_us"] = _median(
                [r["floor_call"][key] - r["off"]["percall"][key] for r in rounds])
        wall = key.replace("_us", "_wall_us")
        entry["wall_added_us"] = _median(
            [r["on"]["percall"][wall] - r["off"]["percall"][wall] for r in rounds])
        per_call[fn] = entry
    ratios = {}
    for name in ("loop_1k", "loop_16k", "agent"):
        ratios[name] = {
            "ratio": _median([r["on"][name]["requests_per_s"] / r["off"][name]["requests_per_s"]
                              for r in rounds]),
            "no_monitor_rps": _median([r["off"][name]["requests_per_s"] for r in rounds]),
            "monitor_rps": _median([r["on"][name]["requests_per_s"] for r in rounds]),
        }
    monitors = [r["monitor"] for r in rounds]
    return {
        "per_call": per_call,
        "requests_per_s": ratios,
        "events": {
            **{key: sum(m.get(key, 0) for m in monitors)
               for key in ("produced", "dropped", "lost", "kernel_lost", "merged",
                           "lost_not_merged")},
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
    load = report["load_average"]
    if max(load["start"], load["end"]) > report["cpus"]:
        echo(f"WARNING: the machine was busy (load average {load['start']} at the start, "
             f"{load['end']} at the end, {report['cpus']} CPUs): the ratios mostly measure "
             "the other load. Re-run on a quiet machine.")
    echo("Per call, CPU time of the client thread (µs; 'added' = with minus without, "
         "median of rounds):")
    for fn, f in report["per_call"].items():
        floor = f"floor: empty uprobe at entry {f['floor_entry_added_us']:+.1f}"
        if "floor_call_added_us" in f:
            floor += f", at the call (+4) {f['floor_call_added_us']:+.1f}"
        echo(f"  {fn:<13} {f['no_monitor_us']:6.1f} -> {f['monitor_us']:6.1f}  "
             f"added {f['added_us']:+.1f} (wall {f['wall_added_us']:+.1f})   ({floor})")
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
            if name.startswith("tls_"):
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
    if os.geteuid() != 0:
        raise PrivilegeError("busted bench probes loads eBPF programs and needs root.",
                             "Run it with sudo.")
    say = (lambda msg: None) if as_json else (lambda msg: click.echo(msg, err=True))
    load_start = round(os.getloadavg()[0], 2)
    workdir = Path(tempfile.mkdtemp(prefix="busted-bench-", dir="/tmp"))
    workdir.chmod(0o711)  # the unprivileged worker account must traverse it
    bench = Bench(workdir, calls, duration, agent_duration, say)
    try:
        floor = Floor()
        probe_lib = libssl_of_python()
        floor_call = call_at_plus4(probe_lib)
        results = []
        for i in range(rounds):
            result: dict[str, Any] = {}
            order = ("off", "floor", "on") if i % 2 == 0 else ("on", "floor", "off")
            for phase in order:
                say(f"round {i + 1}/{rounds}: {phase} ...")
                if phase == "off":
                    result["off"] = {name: bench.run(args) for name, args in bench.workloads()}
                elif phase == "floor":
                    percall = bench.percall()
                    result["floor_entry"] = bench.run(percall, floor=floor, floor_offset=0)
                    if floor_call:
                        result["floor_call"] = bench.run(percall, floor=floor, floor_offset=4)
                else:
                    monitor = MonitorRun(workdir, f"m{i}", monitor_arg)
                    monitor.start()
                    try:
                        result["on"] = {name: bench.run(args, monitor=monitor)
                                        for name, args in bench.workloads()}
                        result["monitor_cores"] = monitor.cores_used()
                    finally:
                        result["monitor"] = monitor.stop()
                    result["monitor_ready_s"] = round(monitor.ready_s, 1)
                    result["monitor_warnings"] = [
                        line for line in monitor.stderr if "WARNING" in line or "ERROR" in line][:20]
            result["monitor"] = monitor_counters(result["monitor"])
            results.append(result)
        say("probes alone: KernelSource in this process, the kernel's BPF run counters ...")
        kernel_only = measure_kernel_only(bench, _max_copy(monitor_arg))
    finally:
        bench.close()
    report = summarize(results, floor_call)
    report["kernel_only"] = kernel_only
    for fn, key in (("SSL_write_ex", "write_us"), ("SSL_read_ex", "read_us")):
        report["per_call"][fn]["probes_only_added_us"] = round(
            kernel_only[key] - report["per_call"][fn]["no_monitor_us"], 3)
    agent = report["requests_per_s"]["agent"]
    agent["probes_only_ratio"] = round(kernel_only["agent_rps"] / agent["no_monitor_rps"], 3)
    report["command"] = "busted bench probes " + " ".join(sys.argv[3:])
    # Other work on the machine moves every figure: say how busy it was.
    report["load_average"] = {"start": load_start, "end": round(os.getloadavg()[0], 2)}
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def _max_copy(monitor_args: tuple[str, ...]) -> int:
    """The --max-copy the monitor runs with, so the in-process probes copy as much."""
    for i, arg in enumerate(monitor_args):
        if arg.startswith("--max-copy="):
            return int(arg.split("=", 1)[1])
        if arg == "--max-copy" and i + 1 < len(monitor_args):
            return int(monitor_args[i + 1])
    return DEFAULT_MAX_COPY


def measure_kernel_only(bench: Bench, max_copy: int) -> dict[str, Any]:
    """The per-call workload under the probes alone, with each program's BPF time."""
    # The source logs every file it probes; the monitor's logs are not this report.
    logging.getLogger("busted.capture").setLevel(logging.WARNING)
    kernel = KernelOnly(max_copy)
    kernel.start()
    marks: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        result = bench.run(bench.percall(), monitor=kernel, around_go=(
            lambda: marks.__setitem__("before", kernel.program_stats()),
            lambda: marks.__setitem__("after", kernel.program_stats())))
        # The agent-like workload too: its ratio without the workers separates what the
        # probes cost from what the workers' CPU costs on a small machine.
        agent = bench.run(dict(bench.workloads())["agent"], monitor=kernel)
    finally:
        counters = kernel.stop()
    return {
        "write_us": round(result["write_us"], 3),
        "read_us": round(result["read_us"], 3),
        "captured": result.get("captured"),
        "bpf": bpf_cost(marks.get("before", {}), marks.get("after", {}),
                        result.get("total_calls", 0)),
        "agent_rps": round(agent["requests_per_s"], 1),
        "lost": counters.get("lost", 0),
    }


def libssl_of_python() -> str:
    """The libssl this Python's ssl module loaded (the clients run this Python)."""
    import ssl  # noqa: F401 - loads libssl into this process

    return libssl_of(os.getpid())
