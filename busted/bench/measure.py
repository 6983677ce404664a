"""What the benchmarks that time traced programs share (`busted bench probes`, `enforce`,
`boringssl`, `go-tls`, `rustls`): the real monitor in a subprocess, fresh client
processes driven through one small stdin/stdout protocol, configurations alternating
round after round, medians and percentiles, and the command's report.

Pairing is what makes the figures usable on a small shared machine: every round
measures each configuration back to back, in an order reversed every other round, and
the figures are medians over rounds (of per-round differences where the bench says so).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from busted.errors import BenchError, PrivilegeError

READY_TIMEOUT_S = 180  # bcc compiles the probes at start-up; slow on a busy 2-core VM
CAPTURE_TIMEOUT_S = 20  # a new client must show up in the monitor's stream by then


# --- the command around a bench ------------------------------------------------------------

def require_root(command: str, why: str = "loads eBPF programs") -> None:
    if os.geteuid() != 0:
        raise PrivilegeError(f"busted bench {command} {why} and needs root.", "Run it with sudo.")


def progress(as_json: bool) -> Callable[[str], None]:
    """Where a bench says what it is doing: stderr, or nowhere when stdout is JSON."""
    return (lambda msg: None) if as_json else (lambda msg: click.echo(msg, err=True))


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def make_workdir(prefix: str = "busted-bench-") -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    workdir.chmod(0o711)  # the unprivileged worker account must traverse it
    return workdir


def finish(report: dict[str, Any], command: str, load_start: float, as_json: bool,
           print_report: Callable[[dict[str, Any]], None]) -> int:
    """Add the command line and the load average (other work on the machine moves every
    figure: say how busy it was), then print the report as JSON or as text."""
    report["command"] = f"busted bench {command} " + " ".join(sys.argv[3:])
    report["load_average"] = {"start": load_start, "end": load_average()}
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


class BenchRun:
    """The opening and the end every ``busted bench`` command shares: the root check,
    where progress goes, the load average at the start; :meth:`finish` prints the report."""

    def __init__(self, command: str, as_json: bool, why: str = "loads eBPF programs") -> None:
        require_root(command, why)
        self.command = command
        self.as_json = as_json
        self.say = progress(as_json)
        self.load_start = load_average()

    def finish(self, report: dict[str, Any],
               print_report: Callable[[dict[str, Any]], None]) -> int:
        return finish(report, self.command, self.load_start, self.as_json, print_report)


def event_totals(monitors: list[dict[str, Any]], keys: tuple[str, ...] = (
        "produced", "dropped", "lost", "kernel_lost")) -> dict[str, int]:
    """The monitors' event counters (:func:`monitor_counters`) summed over the runs."""
    return {key: sum(m.get(key, 0) for m in monitors) for key in keys}


def print_busy_warning(report: dict[str, Any], consequence: str) -> None:
    warning = busy_warning(report, consequence)
    if warning:
        click.echo(warning)


def busy_warning(report: dict[str, Any], consequence: str) -> str | None:
    """A warning line when the load average passed the CPU count during the run."""
    load = report["load_average"]
    if max(load["start"], load["end"]) <= report["cpus"]:
        return None
    return (f"WARNING: the machine was busy (load average {load['start']} at the start, "
            f"{load['end']} at the end, {report['cpus']} CPUs): {consequence}")


# --- rounds and statistics --------------------------------------------------------------------

def alternating(rounds: int, phases: Sequence[str], say: Callable[[str], None],
                what: str = "round",
                label: Callable[[str], str] = str) -> Iterator[tuple[int, str]]:
    """(round index, phase) for every phase of every round, the phases in their order in
    even rounds and reversed in odd ones, saying each as it starts."""
    for i in range(rounds):
        for phase in phases if i % 2 == 0 else tuple(reversed(phases)):
            say(f"{what} {i + 1}/{rounds}: {label(phase)} ...")
            yield i, phase


def median(values: Iterator[float | None] | list[float | None], digits: int = 3,
           missing: Any = float("nan")) -> Any:
    """Median over rounds, rounded; values of None (not measured) are left out, and
    ``missing`` is returned when nothing is left."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), digits) if present else missing


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted samples (nearest rank, no interpolation); NaN when
    there are none."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- client processes ----------------------------------------------------------------------

def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_client(argv: list[str], name: str, *,
               seen: Callable[[int, float], bool] | None = None,
               attach: Callable[[int], None] | None = None,
               detach: Callable[[int], None] | None = None,
               around: tuple[Callable[[], None], Callable[[], None]] | None = None,
               ) -> dict[str, Any]:
    """One measurement in a fresh client process. The client prints ``ready``; each
    ``warm`` line makes it send one more request (it answers a line); ``go`` runs the
    measurement and it prints one JSON line.

    ``seen(pid, timeout)``: the client was started after a monitor; warm it up until the
    monitor shows it is tracing it (``captured`` in the result). ``attach(pid)`` then
    binds probes of the bench's own to it, ``detach(pid)`` undoes that whatever happens;
    ``around`` runs just before the measurement starts and just after its result came."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    attached = False
    try:
        if proc.stdout.readline().strip() != "ready":
            raise BenchError(f"{name} failed to start")
        captured = None
        if seen is not None:
            captured = seen(proc.pid, 2.0)
            deadline = time.monotonic() + CAPTURE_TIMEOUT_S
            while not captured and time.monotonic() < deadline:
                proc.stdin.write("warm\n")
                proc.stdin.flush()
                proc.stdout.readline()
                captured = seen(proc.pid, 0.5)
        if attach is not None:
            attached = True
            attach(proc.pid)
        if around:
            around[0]()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if around:
            around[1]()
        proc.wait(60)
    finally:
        if attached and detach is not None:
            detach(proc.pid)
        if proc.poll() is None:
            proc.kill()
    if not line.startswith("{"):
        raise BenchError(f"{name} produced no result (exit {proc.returncode})")
    result = json.loads(line)
    if captured is not None:
        result["captured"] = captured
    return result


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
        self.summary: dict[str, Any] = {}  # its final summary, once stopped
        self._cpu_since = time.monotonic()
        self._cpu_last: dict[int, float] = {}
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
        self._cpu_last = {}
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

    def saw(self, pid: int, timeout_s: float,
            match: Callable[[dict[str, Any]], bool] = lambda event: True) -> bool:
        """True once an event of ``pid`` (that ``match`` accepts) was published (drains
        the backlog on the way)."""
        from busted import schema

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.sub.poll(100):
                continue
            _, frame = self.sub.recv_multipart()
            if any(e.get("pid") == pid and match(e) for e in schema.decode_batch(frame)):
                return True
        return False

    def saw_pid(self, pid: int, timeout_s: float) -> bool:
        """True once any event of ``pid`` was published."""
        return self.saw(pid, timeout_s)

    def stop(self) -> dict[str, Any]:
        """Stop it (again: a no-op) and return its final summary."""
        if self.sub is not None:
            self.sub.close()
            self.sub = None
        if self.proc is not None:
            stop_process(self.proc)
        if self.summary_path.exists():
            self.summary = json.loads(self.summary_path.read_text())
        return self.summary

    def warnings(self) -> list[str]:
        """Its WARNING and ERROR lines."""
        return [line for line in self.stderr if "WARNING" in line or "ERROR" in line]


@contextmanager
def monitor_running(workdir: Path, name: str, args: tuple[str, ...]) -> Iterator[MonitorRun]:
    """A ready monitor for the ``with`` block, stopped after it whatever happened (its
    summary is then in ``.summary``)."""
    monitor = MonitorRun(workdir, name, args)
    monitor.start()
    try:
        yield monitor
    finally:
        monitor.stop()


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


def max_copy_of(monitor_args: tuple[str, ...]) -> int:
    """The --max-copy the monitor runs with, so the in-process probes copy as much."""
    from busted.config import DEFAULT_MAX_COPY

    for i, arg in enumerate(monitor_args):
        if arg.startswith("--max-copy="):
            return int(arg.split("=", 1)[1])
        if arg == "--max-copy" and i + 1 < len(monitor_args):
            return int(monitor_args[i + 1])
    return DEFAULT_MAX_COPY
