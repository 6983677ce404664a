"""`busted bench enforce`: what holding TLS writes costs an LLM-like request loop.

Under ``busted monitor --enforce`` every TLS write of a process without a controlling
terminal is stopped (SIGSTOP in the write probe) until the pipeline has judged it and
capture sends SIGCONT. This bench measures what that adds, with three configurations
alternating round after round (order reversed every other round, like
:mod:`busted.bench.probes`):

- ``off``: no monitor;
- ``monitor``: ``busted monitor --source bpf`` with the policy, without ``--enforce``
  (probes and pipeline, nothing held);
- ``enforce``: the same monitor with ``--enforce`` (every request of the loop is held).

The workload (``tls_workload.py latency``, a fresh client process per measurement,
started in a new session so it has no terminal and can be held) sends sequential
``POST /v1/chat/completions`` requests of ~1 KiB of JSON with SNI api.openai.com on one
keep-alive connection and times each from its write to the end of its answer. The
request is one ``SSL_write_ex``, so one held write per request: the added latency per
held write is the enforce configuration's per-request latency percentile minus the
same percentile without a monitor (and, separately, with the monitor not enforcing);
figures are medians over rounds.

The loopback server stands for the remote API: it gets a pseudo-terminal as its
controlling terminal, so enforcement never stops it and only the client pays.

Two views of the hold itself, next to the client's figures:

- capture's counters from the monitor's final summary (``enforce_holds``, ...);
- a small tracer of this bench (bcc, kernel tracepoints) on the client's pid: the time
  from the SIGSTOP the probe sends to the SIGCONT capture sends (the hold as the kernel
  saw it) and from that SIGCONT to the client running on a CPU again (resume delay).
  It is loaded for all three configurations, so its small cost is the same in each.

The goal (issue 16; issue 6 asked for 5 ms) is a p99 added latency per held write of at
most 2 ms, judged on the worse of the two comparisons.
"""

from __future__ import annotations

import ctypes as ct
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import click

from busted.bench.measure import (
    BenchRun,
    MonitorRun,
    alternating,
    make_workdir,
    median,
    monitor_counters,
    percentile,
    stop_process,
)
from busted.errors import BenchError, BustedError
from busted.kernel.procstat import is_stopped

GOAL_P99_MS = 2.0
# Nothing the loop sends is denied: the policy only has to be evaluated.
RULE = """package busted
default decision = "allow"
decision = "deny" {
    input.llm_provider == "OpenAI"
    contains(input.tls_payload, "berko")
}"""
CONFIGS = ("off", "monitor", "enforce")
LABELS = {"off": "no monitor", "monitor": "monitor, no --enforce", "enforce": "monitor --enforce"}
WARM_TIMEOUT_S = 20  # a new client must be seen (and, enforcing, held) by then
LOCK_WAIT_S = 300  # another engineer's enforcing monitor may hold the host lock a while
LOCK_ATTEMPTS = 5  # starts of our enforcing monitor that may lose the lock to another one
HOLD_FIELDS = ("holds", "released", "killed", "late_released", "late_killed", "unknown_holds",
               "judged_in_classify")

# Hold and resume times of the watched pids, from the kernel's own tracepoints.
TRACER = """
#define SLOTS 65536
BPF_HASH(watched, u32, u8, 64);
BPF_HASH(stop_ns, u32, u64, 64);   /* pid -> when the probe sent SIGSTOP */
BPF_HASH(cont_ns, u32, u64, 64);   /* pid -> when capture sent SIGCONT */
BPF_ARRAY(counts, u32, 2);         /* 0: holds, 1: resumes */
BPF_ARRAY(hold_ns, u64, SLOTS);
BPF_ARRAY(resume_ns, u64, SLOTS);

static __always_inline void record(u32 which, u64 value)
{
    u32 *n = counts.lookup(&which);
    if (!n)
        return;
    u32 i = *n;
    *n = i + 1;  /* one client at a time: no contention worth an atomic */
    if (i >= SLOTS)
        return;
    u64 *slot = which ? resume_ns.lookup(&i) : hold_ns.lookup(&i);
    if (slot)
        *slot = value;
}

TRACEPOINT_PROBE(signal, signal_generate)
{
    u32 pid = args->pid;
    if (!watched.lookup(&pid))
        return 0;
    u64 now = bpf_ktime_get_ns();
    if (args->sig == 19) {
        stop_ns.update(&pid, &now);
    } else if (args->sig == 18) {
        u64 *t = stop_ns.lookup(&pid);
        if (t) {
            record(0, now - *t);
            stop_ns.delete(&pid);
            cont_ns.update(&pid, &now);
        }
    }
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u32 pid = args->next_pid;
    u64 *t = cont_ns.lookup(&pid);
    if (!t)
        return 0;
    record(1, bpf_ktime_get_ns() - *t);
    cont_ns.delete(&pid);
    return 0;
}
"""


def _percentile_ms(values_ns: list[int], q: float) -> float | None:
    if not values_ns:
        return None
    return round(percentile(sorted(values_ns), q) / 1e6, 4)


def _median(values: list[float | None]) -> float | None:
    """Median over rounds; None when no round measured it."""
    return median(values, digits=4, missing=None)


def _ms(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


class HoldTracer:
    """SIGSTOP -> SIGCONT -> on-CPU of one client at a time (the client is single-threaded,
    so its thread id is its pid)."""

    def __init__(self) -> None:
        from bcc import BPF

        try:
            self.bpf = BPF(text=TRACER)
        except Exception as exc:  # bcc raises bare Exception for compile errors
            raise BenchError(f"the hold tracer did not load: {exc}",
                             "Check `busted doctor`: bcc and kernel headers are needed.") from exc

    def watch(self, pid: int) -> None:
        self.bpf["watched"][ct.c_uint32(pid)] = ct.c_uint8(1)

    def unwatch(self, pid: int) -> None:
        for name in ("watched", "stop_ns", "cont_ns"):
            try:
                del self.bpf[name][ct.c_uint32(pid)]
            except KeyError:
                pass

    def holds(self) -> int:
        return self.bpf["counts"][ct.c_uint32(0)].value

    def reset(self) -> None:
        for i in (0, 1):
            self.bpf["counts"][ct.c_uint32(i)] = ct.c_uint32(0)

    def samples(self) -> dict[str, list[int]]:
        out = {}
        for i, name in enumerate(("hold_ns", "resume_ns")):
            n = min(self.bpf["counts"][ct.c_uint32(i)].value, 65536)
            table = self.bpf[name]
            out[name] = [table[ct.c_uint32(j)].value for j in range(n)]
        return out


class LoopBench:
    """The loopback server (on a pseudo-terminal: never held) and the client runs."""

    def __init__(self, workdir: Path, tracer: HoldTracer, *, size: int, duration: float,
                 answer_ms: float, pause_ms: float) -> None:
        from busted.bench.tls_workload import make_certificates

        self.args = ["--size", str(size), "--duration", str(duration), "--stream-ms", str(answer_ms),
                     "--pause-ms", str(pause_ms)]
        self.run_timeout = duration + 60  # the loop stops after its duration; the rest is slack
        self.tracer = tracer
        self.ca, cert, key = make_certificates(workdir)
        port_file = workdir / "port"
        self._master, slave = os.openpty()
        try:
            # A new session whose controlling terminal is the pty's slave (fd 0).
            self.server = subprocess.Popen(
                [sys.executable, "-m", "busted.bench.tls_workload", "serve", "--cert", str(cert),
                 "--key", str(key), "--port-file", str(port_file)],
                stdin=slave, start_new_session=True,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        finally:
            os.close(slave)
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BenchError("the loopback TLS server did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def close(self) -> None:
        stop_process(self.server, 10)
        os.close(self._master)

    def run(self, config: str, monitor: MonitorRun | None) -> dict[str, Any]:
        """One measurement in a fresh client without a terminal (so it can be held)."""
        argv = [sys.executable, "-m", "busted.bench.tls_workload", "client", "latency", *self.args,
                "--port", str(self.port), "--cafile", str(self.ca)]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        lines: queue.Queue[str] = queue.Queue()

        def read_lines() -> None:
            for text in proc.stdout:
                lines.put(text)

        threading.Thread(target=read_lines, daemon=True).start()

        def ask(command: str | None, timeout: float) -> str:
            try:
                if command:
                    proc.stdin.write(command + "\n")
                    proc.stdin.flush()
            except BrokenPipeError:
                raise BenchError(f"the {config} client exited early "
                                 f"(status {proc.wait(5)})") from None
            try:
                return lines.get(timeout=timeout).strip()
            except queue.Empty:
                stopped = ""
                if is_stopped(proc.pid):
                    stopped = " (it is stopped: held by another enforcing monitor?)"
                raise BenchError(f"the {config} client did not answer within {timeout:.0f} s"
                                 f"{stopped}") from None

        self.tracer.watch(proc.pid)
        try:
            if ask(None, 30) != "ready":
                raise BenchError(f"the {config} client failed to start")
            if monitor is not None:
                self._warm(config, monitor, proc.pid, ask)
            self.tracer.reset()
            line = ask("go", self.run_timeout)
            samples = self.tracer.samples()
            proc.wait(30)
        finally:
            self.tracer.unwatch(proc.pid)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if not line.startswith("{"):
            raise BenchError(f"the {config} client produced no result (exit {proc.returncode})")
        result = json.loads(line)
        result["traced_holds"] = len(samples["hold_ns"])
        result["traced_hold_ms"] = {"p50": _percentile_ms(samples["hold_ns"], 0.5),
                                    "p99": _percentile_ms(samples["hold_ns"], 0.99)}
        result["resume_ms"] = {"p50": _percentile_ms(samples["resume_ns"], 0.5),
                               "p99": _percentile_ms(samples["resume_ns"], 0.99)}
        return result

    def _warm(self, config: str, monitor: MonitorRun, pid: int, ask) -> None:
        """Warm-up requests until the monitor shows the client (and, enforcing, the
        kernel has held it): the exec of a new process is handled asynchronously."""
        deadline = time.monotonic() + WARM_TIMEOUT_S
        seen = monitor.saw_pid(pid, 1.0)
        while time.monotonic() < deadline:
            if seen and (config != "enforce" or self.tracer.holds() > 0):
                return
            ask("warm", 30)
            seen = seen or monitor.saw_pid(pid, 0.5)
        if not seen:
            raise BenchError(f"the monitor never showed the {config} client (pid {pid})")
        raise BenchError(f"the client (pid {pid}) was never held under --enforce",
                         "It must have no controlling terminal; see the monitor's log.")


def _wait_for_enforce_lock(say) -> None:
    """Only one monitor may enforce per host: wait while another one does."""
    from busted.enforce.enforcer import HOST_LOCK

    deadline = time.monotonic() + LOCK_WAIT_S
    told = False
    while True:
        try:
            fd = os.open(HOST_LOCK, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        finally:
            os.close(fd)  # releases the lock if we took it
        if time.monotonic() > deadline:
            raise BenchError(f"another busted monitor kept enforcing on this host for "
                             f"{LOCK_WAIT_S} s ({HOST_LOCK}).", "Stop it and run the bench again.")
        if not told:
            say("another monitor is enforcing on this host: waiting for it to stop ...")
            told = True
        time.sleep(1)


def _run_with_monitor(bench: LoopBench, workdir: Path, name: str, config: str,
                      args: tuple[str, ...], say) -> tuple[dict[str, Any], dict[str, Any]]:
    """One measurement under a monitor of ours; returns it and the monitor's summary. An
    enforcing monitor that lost the host lock to another one in the meantime waits for
    that one and starts again."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        monitor = MonitorRun(workdir, f"{name}-{attempt}", args)
        try:
            monitor.start()
            result = bench.run(config, monitor)
            if config == "enforce":
                result["capture_hold_ms"] = _live_hold_ms(monitor)
            return result, monitor.stop()
        except BenchError as exc:
            lost_lock = any("already enforcing" in line for line in monitor.stderr)
            if not lost_lock or attempt == LOCK_ATTEMPTS:
                notes = monitor.warnings()
                if not notes:
                    raise
                raise BenchError(exc.message, "The monitor said:\n" + "\n".join(notes[-10:])) from None
        finally:
            monitor.stop()  # SIGTERM and wait, whatever happened (again: a no-op)
        say("another monitor started enforcing first: waiting for it ...")
        _wait_for_enforce_lock(say)
    raise BenchError("no enforcing monitor could be started")  # not reached: the last attempt raises


def _live_hold_ms(monitor: MonitorRun) -> dict[str, Any]:
    """Capture's hold percentiles, asked while the monitor still runs: the final summary
    keeps only the counts of a worker that has exited, not its gauges."""
    from busted import control_client
    from busted.config import HEARTBEAT_INTERVAL_S

    time.sleep(HEARTBEAT_INTERVAL_S + 0.2)  # a heartbeat that counts the last requests
    try:
        status = control_client.request(monitor.runtime_dir, "status")
    except BustedError:
        return {}
    capture = (status.get("workers") or {}).get("capture") or {}
    return {key: capture.get(f"enforce_{key}") for key in ("hold_ms_p50", "hold_ms_p99")}


def _not_held(result: dict[str, Any], config: str) -> dict[str, Any]:
    if result["traced_holds"]:
        raise BenchError(f"the client was held {result['traced_holds']} times in the "
                         f"'{LABELS[config]}' configuration: another monitor was enforcing on "
                         "this host meanwhile.", "Run the bench again when it has stopped.")
    return result


def _capture_holds(summary: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """Capture's counts from the final summary, its hold percentiles from ``live``."""
    capture = (summary.get("workers") or {}).get("capture") or {}
    out = {key: capture.get(f"enforce_{key}", 0) for key in HOLD_FIELDS}
    # Held writes classify identified, judged and answered itself (the short path).
    out["judged_in_classify"] = ((summary.get("workers") or {}).get("classify") or {}).get(
        "held_judged", 0)
    for key in ("hold_ms_p50", "hold_ms_p99"):
        out[key] = capture.get(f"enforce_{key}", live.get(key))
    return out


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    configs = {}
    for config in CONFIGS:
        runs = [r[config] for r in rounds]
        configs[config] = {key: _median([run[key] for run in runs])
                           for key in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
                                       "max_ms")}
        configs[config]["requests"] = sum(run["requests"] for run in runs)
    added = {}
    for base in ("off", "monitor"):
        added[f"vs_{base}"] = {
            q: _median([r["enforce"][f"{q}_ms"] - r[base][f"{q}_ms"] for r in rounds])
            for q in ("p50", "p99", "mean")}
    ratios = {
        "enforce_vs_off": _median([r["enforce"]["requests_per_s"] / r["off"]["requests_per_s"]
                                   for r in rounds]),
        "enforce_vs_monitor": _median([r["enforce"]["requests_per_s"] / r["monitor"]["requests_per_s"]
                                       for r in rounds]),
        "monitor_vs_off": _median([r["monitor"]["requests_per_s"] / r["off"]["requests_per_s"]
                                   for r in rounds]),
    }
    capture = [r["holds"] for r in rounds]
    holds = {key: sum(c[key] for c in capture) for key in HOLD_FIELDS}
    for key in ("hold_ms_p50", "hold_ms_p99"):
        values = [c[key] for c in capture if c[key] is not None]
        holds[key] = _median(values) if values else None
    enforce_runs = [r["enforce"] for r in rounds]
    traced = {
        "holds": sum(run["traced_holds"] for run in enforce_runs),
        "holds_per_request": _median([run["traced_holds"] / run["requests"] for run in enforce_runs]),
        "hold_ms_p50": _median([run["traced_hold_ms"]["p50"] for run in enforce_runs]),
        "hold_ms_p99": _median([run["traced_hold_ms"]["p99"] for run in enforce_runs]),
        "resume_ms_p50": _median([run["resume_ms"]["p50"] for run in enforce_runs]),
        "resume_ms_p99": _median([run["resume_ms"]["p99"] for run in enforce_runs]),
    }
    # Judged on the worse comparison: the first is what a user notices turning on
    # --enforce, the second what the hold alone adds (same probes and pipeline).
    p99 = max(added["vs_off"]["p99"], added["vs_monitor"]["p99"])
    events = {key: sum(r["monitors"][c].get(key, 0) for r in rounds for c in ("monitor", "enforce"))
              for key in ("produced", "dropped", "lost", "kernel_lost")}
    return {
        "configs": configs,
        "added_ms": added,
        "throughput_ratio": ratios,
        "capture_holds": holds,
        "traced_holds": traced,
        "goal": {"p99_added_ms_max": GOAL_P99_MS, "p99_added_ms": p99, "met": p99 <= GOAL_P99_MS},
        "events": events,
        "rounds": rounds,
        "cpus": os.cpu_count(),
    }


MEASURED_FROM = (
    "Added latency per held write = per-request latency of the loop under --enforce "
    "(client clock, from its TLS write of the request to the last byte of the answer; one "
    "held write per request) minus the same percentile without a monitor, or with the "
    "monitor not enforcing; medians over rounds.")


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    load = report["load_average"]
    # The loop and the monitor load the machine themselves: only the load found at the
    # start says that something else was running.
    if load["start"] > report["cpus"] / 2:
        console.print(f"WARNING: the machine was busy before the bench started (load average "
                      f"{load['start']}, {report['cpus']} CPUs): the figures include that load.")
    table = Table(show_edge=False, header_style="bold",
                  title=f"LLM-like request loop ({report['settings']['request_bytes']}-byte requests, "
                        "one keep-alive connection)")
    for name in ("configuration", "requests/s", "p50 ms", "p90 ms", "p99 ms", "mean ms"):
        table.add_column(name, justify="left" if name == "configuration" else "right")
    for config in CONFIGS:
        c = report["configs"][config]
        table.add_row(LABELS[config], f"{c['requests_per_s']:,.0f}", f"{c['p50_ms']:.3f}",
                      f"{c['p90_ms']:.3f}", f"{c['p99_ms']:.3f}", f"{c['mean_ms']:.3f}")
    console.print(table)
    added = Table(show_edge=False, header_style="bold", title="--enforce adds, per held write")
    for name in ("compared with", "p50 ms", "p99 ms", "mean ms", "requests/s ratio"):
        added.add_column(name, justify="left" if name == "compared with" else "right")
    ratios = report["throughput_ratio"]
    for base, ratio in (("off", ratios["enforce_vs_off"]), ("monitor", ratios["enforce_vs_monitor"])):
        a = report["added_ms"][f"vs_{base}"]
        added.add_row(LABELS[base], f"{a['p50']:+.3f}", f"{a['p99']:+.3f}", f"{a['mean']:+.3f}",
                      f"{ratio:.3f}")
    console.print(added)
    console.print(MEASURED_FROM, soft_wrap=False)
    h, t = report["capture_holds"], report["traced_holds"]
    capture_ms = (f"p50 {_ms(h['hold_ms_p50'])} / p99 {_ms(h['hold_ms_p99'])} ms"
                  if h["hold_ms_p50"] is not None else "p50/p99 not in the monitor's summary")
    console.print(f"Capture's counters (all monitor --enforce runs): holds {h['holds']:,}, released "
                  f"{h['released']:,}, killed {h['killed']}, released late {h['late_released']}, "
                  f"judged in classify (short path) {h['judged_in_classify']:,}; "
                  f"hold (kernel timestamp of the write to SIGCONT): {capture_ms}")
    console.print(f"Traced in the kernel (client only): {t['holds']:,} holds, "
                  f"{_ms(t['holds_per_request'])} per request; SIGSTOP -> SIGCONT p50 "
                  f"{_ms(t['hold_ms_p50'])} / p99 {_ms(t['hold_ms_p99'])} ms; SIGCONT -> on a CPU "
                  f"p50 {_ms(t['resume_ms_p50'])} / p99 {_ms(t['resume_ms_p99'])} ms")
    ev = report["events"]
    console.print(f"Monitor events (all runs): produced {ev['produced']:,}, dropped {ev['dropped']:,}, "
                  f"lost {ev['lost']:,} (ring buffer {ev['kernel_lost']:,}); monitor without enforce "
                  f"vs none: requests/s ratio {ratios['monitor_vs_off']:.3f}")
    goal = report["goal"]
    verdict = "PASS" if goal["met"] else "MISS"
    console.print(f"Load average {load['start']} at the start, {load['end']} at the end "
                  f"({report['cpus']} CPUs; the loop and the monitor account for some of it).")
    console.print(f"{verdict}: p99 added latency per held write {goal['p99_added_ms']:.3f} ms, the "
                  f"worse of the two comparisons (goal <= {goal['p99_added_ms_max']:g} ms)", style="bold")


@click.command(epilog="""\b
Examples:
  sudo busted bench enforce
  sudo busted bench enforce --rounds 5 --duration 10 --json > enforce.json
  sudo busted bench enforce --answer-ms 20 --pause-ms 50
  sudo busted bench enforce --monitor-arg=--hold-deadline-ms=100
""")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Rounds of the three configurations (medians are taken over rounds).")
@click.option("--duration", type=click.FloatRange(0.5, 600), default=5.0, show_default=True,
              help="Seconds of the request loop per configuration and round.")
@click.option("--size", type=click.IntRange(64, 65536), default=1024, show_default=True,
              help="Bytes of JSON per request.")
@click.option("--answer-ms", type=click.FloatRange(0, 10_000), default=0.0, show_default=True,
              help="Answers streamed over this many ms, as a model would (0: at once).")
@click.option("--pause-ms", type=click.FloatRange(0, 10_000), default=0.0, show_default=True,
              help="Pause between an answer and the next request (an agent's own work; 0: none).")
@click.option("--monitor-arg", multiple=True, metavar="ARG",
              help="Extra argument for both monitors (repeatable), e.g. "
                   "--monitor-arg=--hold-deadline-ms=100.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def enforce(rounds: int, duration: float, size: int, answer_ms: float, pause_ms: float,
            monitor_arg: tuple[str, ...], as_json: bool) -> int:
    """The latency a held write adds and the request-loop throughput under --enforce,
    against no monitor and the monitor without --enforce (root, loopback only)."""
    run = BenchRun("enforce", as_json, "runs `busted monitor --enforce`")
    say = run.say
    workdir = make_workdir()
    monitors = {"monitor": ("--format", "none", "--rule", RULE, *monitor_arg),
                "enforce": ("--format", "none", "--rule", RULE, "--enforce", *monitor_arg)}
    say("loading the hold tracer ...")
    bench = LoopBench(workdir, HoldTracer(), size=size, duration=duration, answer_ms=answer_ms,
                      pause_ms=pause_ms)
    results: list[dict[str, Any]] = [{"monitors": {}} for _ in range(rounds)]
    try:
        for i, config in alternating(rounds, CONFIGS, say, label=LABELS.__getitem__):
            result = results[i]
            # Another enforcing monitor would hold our client in every configuration.
            _wait_for_enforce_lock(say)
            if config == "off":
                result[config] = _not_held(bench.run(config, None), config)
                continue
            result[config], summary = _run_with_monitor(bench, workdir, f"{config}{i}", config,
                                                        monitors[config], say)
            if config != "enforce":
                _not_held(result[config], config)
            result["monitors"][config] = monitor_counters(summary)
            if config == "enforce":
                result["holds"] = _capture_holds(summary, result[config].get("capture_hold_ms") or {})
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report = summarize(results)
    report["settings"] = {"rounds": rounds, "duration_s": duration, "size": size,
                          "request_bytes": results[0]["off"]["request_bytes"], "answer_ms": answer_ms,
                          "pause_ms": pause_ms, "monitor_args": list(monitor_arg)}
    report["measured_from"] = MEASURED_FROM
    return run.finish(report, print_report)
