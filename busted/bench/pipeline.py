"""`busted bench pipeline`: synthetic events through the real supervisor and all five
workers (``busted monitor --source synthetic`` in a subprocess, JSON output to
/dev/null), reporting:

- the highest offered rate that was sustained with zero loss (every produced event
  delivered, nothing dropped, production kept pace with the offer);
- end-to-end latency p50/p99 at fixed offered rates, from capture's timestamp to a
  subscriber of ``events.sock``; p99 also without the run's first 0.5 s (start-up: the
  workers' first batches), which is what a running monitor shows;
- drops and per-worker CPU (from psutil over the run).

Each run is one monitor; figures come from its final counters (BUSTED_SUMMARY_JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
import psutil
import zmq

from busted import control_client, schema
from busted.bench.measure import percentile

LATENCY_RATES = (1_000, 10_000, 50_000)
THROUGHPUT_RATES = (20_000, 30_000, 40_000, 50_000, 75_000, 100_000, 150_000, 200_000)
WARM_UP_S = 0.5  # latency after this much of a run is the steady state
DRAIN_SLACK_S = 0.5  # a sustained rate leaves at most this much backlog to drain at the end


def _busted() -> list[str]:
    return [sys.executable, "-m", "busted"]


class LatencyProbe(threading.Thread):
    """Subscribes to events.sock and records capture-to-subscriber latency."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.samples: list[float] = []
        self.born: list[float] = []  # each sample's capture timestamp
        self.received = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"events")
        sock.connect(self.endpoint)
        while not self.stop_flag.is_set():
            if not sock.poll(100):
                continue
            _, frame = sock.recv_multipart()
            now = time.time()
            events = schema.decode_batch(frame)
            self.received += len(events)
            # Every event of a batch left capture within the same ~1 ms window; sampling
            # each keeps the distribution honest at low rates.
            for e in events:
                if "timestamp" in e:
                    self.samples.append(now - e["timestamp"])
                    self.born.append(e["timestamp"])
        sock.close(linger=0)


def _cpu_sampler(runtime_dir: Path, stop: threading.Event, out: dict[str, float]) -> None:
    """Sum CPU seconds per worker while the run lasts (pids from `busted status`)."""
    procs: dict[str, psutil.Process] = {}
    first: dict[str, float] = {}
    while not stop.is_set():
        try:
            status = control_client.request(runtime_dir, "status", timeout_s=1)
        except Exception:  # noqa: BLE001 - not up yet, or already gone
            time.sleep(0.1)
            continue
        for role, w in status["workers"].items():
            if w.get("pid") and role not in procs:
                try:
                    procs[role] = psutil.Process(w["pid"])
                    first[role] = sum(procs[role].cpu_times()[:2])
                except psutil.Error:
                    pass
        for role, proc in procs.items():
            try:
                out[role] = sum(proc.cpu_times()[:2]) - first[role]
            except psutil.Error:
                pass
        time.sleep(0.2)


def run_once(rate: int, duration_s: float, *, latency: bool, workdir: Path,
             fmt: str = "json") -> dict[str, Any]:
    """One monitor, ``rate`` events/s for ``duration_s``; returns its figures."""
    runtime_dir = Path(tempfile.mkdtemp(prefix="bp", dir=workdir))
    runtime_dir.rmdir()  # busted creates it (as 0750 root:busted) and removes it at exit
    summary_path = runtime_dir.with_suffix(".json")
    count = int(rate * duration_s)
    env = dict(os.environ, BUSTED_SUMMARY_JSON=str(summary_path))
    cmd = [*_busted(), "monitor", "--source", "synthetic", "--rate", str(rate), "--count",
           str(count), "--exit-when-done", "--format", fmt, "--runtime-dir", str(runtime_dir)]
    probe = None
    stop = threading.Event()
    cpu: dict[str, float] = {}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        events_sock = runtime_dir / "events.sock"
        deadline = time.monotonic() + 15
        while not events_sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if latency:
            probe = LatencyProbe(f"ipc://{events_sock}")
            probe.start()
        sampler = threading.Thread(target=_cpu_sampler, args=(runtime_dir, stop, cpu), daemon=True)
        sampler.start()
        started = time.monotonic()
        _, err = proc.communicate(timeout=duration_s * 4 + 30)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        if probe:
            probe.stop_flag.set()
            probe.join(timeout=2)
    if not summary_path.exists():
        raise click.ClickException(f"the monitor produced no summary:\n{err.decode()[-2000:]}")
    summary = json.loads(summary_path.read_text())
    produced, delivered = summary["produced"], summary["delivered"]
    result: dict[str, Any] = {
        "offered_per_s": rate,
        "produced": produced,
        "delivered": delivered,
        "dropped": summary["dropped"],
        "lost": summary["lost"],
        "elapsed_s": round(elapsed, 2),
        "production_s": summary["workers"]["capture"].get("active_ms", 0) / 1000,
        "cpu_s": {role: round(v, 2) for role, v in cpu.items()},
        "zero_loss": produced == count and delivered == produced and summary["dropped"] == 0,
    }
    if probe is not None and probe.samples:
        # The first moments measure start-up (each worker's first batches: imports,
        # caches, sockets still connecting), not the pipeline running: shown apart.
        first = probe.born[0] if probe.born else 0.0
        steady = [s for s, t in zip(probe.samples, probe.born, strict=True)
                  if t - first >= WARM_UP_S]
        result["latency_ms"] = {
            "p50": round(percentile(sorted(probe.samples), 0.50) * 1000, 3),
            "p99": round(percentile(sorted(probe.samples), 0.99) * 1000, 3),
            "p99_steady": round(percentile(sorted(steady), 0.99) * 1000, 3),
            "samples": len(probe.samples),
        }
    return result


@click.command(epilog="\b\nExamples:\n  busted bench pipeline\n  busted bench pipeline --json\n"
                      "  busted bench pipeline --duration 2 --max-rate 100000")
@click.option("--duration", type=float, default=4.0, show_default=True,
              help="Seconds of traffic per measured rate.")
@click.option("--max-rate", type=int, default=THROUGHPUT_RATES[-1], show_default=True,
              help="Highest offered rate tried for the zero-loss search.")
@click.option("--format", "fmt", type=click.Choice(["json", "none"]), default="json",
              show_default=True, help="The output worker's format (none: publish only).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def pipeline(duration: float, max_rate: int, fmt: str, as_json: bool) -> int:
    """Throughput (zero loss) and latency of the real pipeline with synthetic events."""
    workdir = Path(tempfile.mkdtemp(prefix="busted-bench-", dir="/tmp"))
    workdir.chmod(0o711)  # the unprivileged worker account must traverse it
    say = (lambda *a: None) if as_json else (lambda msg: click.echo(msg, err=True))
    runs = []
    latency: dict[str, dict[str, float]] = {}
    for rate in LATENCY_RATES:
        say(f"latency run at {rate:,} events/s ...")
        r = run_once(rate, min(duration, 3.0), latency=True, workdir=workdir, fmt=fmt)
        runs.append(r)
        latency[str(rate)] = r.get("latency_ms", {})
    sustained = 0
    # Start-up and shutdown time of a monitor with no backlog (the 1k/s run): a rate is
    # sustained only if its run took no longer than that beyond production, i.e. the
    # workers kept up instead of draining a queue once the source stopped.
    overhead = runs[0]["elapsed_s"] - runs[0]["production_s"]
    for rate in (r for r in THROUGHPUT_RATES if r <= max_rate):
        say(f"throughput run at {rate:,} events/s ...")
        r = run_once(rate, duration, latency=False, workdir=workdir, fmt=fmt)
        runs.append(r)
        kept_pace = r["production_s"] <= duration * 1.05 + 0.05 and \
            r["elapsed_s"] - r["production_s"] <= overhead + DRAIN_SLACK_S
        r["kept_pace"] = kept_pace
        if r["zero_loss"] and kept_pace:
            sustained = rate
        else:
            break
    report = {
        "sustained_events_per_s": sustained,
        "dropped": sum(r["dropped"] for r in runs),
        "latency_ms": latency,
        "runs": runs,
        "cpus": os.cpu_count(),
        "format": fmt,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0
    click.echo(f"sustained with zero loss: {sustained:,} events/s (5 workers, {os.cpu_count()} CPUs)")
    for rate, lat in latency.items():
        click.echo(f"latency at {int(rate):>6,} ev/s: p50 {lat.get('p50', float('nan')):.2f} ms, "
                   f"p99 {lat.get('p99_steady', float('nan')):.2f} ms after the first "
                   f"{WARM_UP_S:g} s ({lat.get('p99', float('nan')):.2f} ms with it)")
    for r in runs:
        cpu = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(r["cpu_s"].items()))
        click.echo(f"  offered {r['offered_per_s']:>7,}/s: produced {r['produced']:,} delivered "
                   f"{r['delivered']:,} dropped {r['dropped']:,} in {r['elapsed_s']}s; cpu {cpu}")
    return 0
