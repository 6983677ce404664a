"""`busted bench ui`: the dashboard's frame rate while events pour in.

Three processes, like in real use: a publisher playing the output worker (a ZeroMQ PUB
bound at ``<tmp>/events.sock`` sending demo events in batches of 64 at the asked rate,
plus a stats message every second), the dashboard itself (the real window, vsync off,
connected through the real :class:`~busted_gui.stream.StreamClient`), and this
command, which starts both, collects the dashboard's frame times and reports. Without
a DISPLAY it starts a private Xvfb (software rendering: a desktop GPU does better).

Child entry points (``python -m busted_gui.bench publish|window ...``) are internal.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from busted.bench.measure import percentile

WARMUP_S = 2.0


# ------------------------------------------------------------------ publisher --------
def publish(endpoint: str, rate: float, duration_s: float) -> None:
    """Send demo events at ``rate`` per second for ``duration_s`` (then exit)."""
    import msgpack
    import zmq

    from busted import schema
    from busted.sources.synthetic import TrafficGenerator
    from busted_gui.demo import demo_stats

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.bind(endpoint)
    # A pool of realistic events, renumbered as they go out (generation is not what
    # this measures).
    pool = TrafficGenerator(seed=3).events(8192, now=time.time())
    batch_size = 64
    seq = 0
    sent = 0
    started = time.monotonic()
    next_stats = started
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        if now - started >= duration_s:
            break
        if now >= next_stats:
            next_stats += 1.0
            stats = demo_stats(sent, time.time() - (now - started), time.time())
            sock.send_multipart([b"stats", msgpack.packb(stats)])
        due = int((now - started) * rate) if rate > 0 else 0
        while sent + batch_size <= due:
            batch = []
            wall = time.time()
            for i in range(batch_size):
                event = dict(pool[(seq + i) % len(pool)])
                event["seq"] = seq + i
                event["timestamp"] = wall
                batch.append(event)
            seq += batch_size
            sent += batch_size
            sock.send_multipart([b"events", schema.encode_batch(batch)])
        time.sleep(0.002)
    sock.close()
    ctx.term()


# --------------------------------------------------------------------- window --------
def window(endpoint: str, duration_s: float, max_events: int) -> dict[str, Any]:
    """Run the real dashboard for ``WARMUP_S + duration_s`` and measure its frames."""
    from busted_gui.app import run
    from busted_gui.stream import StreamClient

    source = StreamClient(endpoint)
    frames: list[float] = []
    marks: dict[str, Any] = {}

    def on_frame(dashboard) -> None:
        now = time.perf_counter()
        if "start" not in marks:
            if now - marks.setdefault("opened", now) >= WARMUP_S:
                marks["start"] = now
                marks["received0"] = source.status().received
                marks["cpu0"] = _cpu()
            return
        frames.append(now)
        marks["dashboard"] = dashboard

    run(source, max_events=max_events, title="Busted — bench", vsync=False,
        duration_s=WARMUP_S + duration_s, on_frame=on_frame)
    if len(frames) < 2:
        return {"error": "the window rendered fewer than two frames"}
    status = source.status()
    elapsed = frames[-1] - marks["start"]
    gaps = sorted(b - a for a, b in zip(frames, frames[1:], strict=False))
    dashboard = marks["dashboard"]
    return {
        "frames": len(frames),
        "seconds": round(elapsed, 2),
        "fps": round(len(frames) / elapsed, 1),
        "frame_ms_p50": round(1000 * percentile(gaps, 0.50), 2),
        "frame_ms_p95": round(1000 * percentile(gaps, 0.95), 2),
        "frame_ms_p99": round(1000 * percentile(gaps, 0.99), 2),
        "frame_ms_max": round(1000 * gaps[-1], 2),
        "frame_ms_mean": round(1000 * statistics.fmean(gaps), 2),
        "update_ms_p50": _p50_ms(dashboard.update_times),
        "update_ms_max": round(1000 * max(dashboard.update_times, default=0.0), 2),
        "render_ms_p50": _p50_ms(dashboard.render_times),
        "render_ms_max": round(1000 * max(dashboard.render_times, default=0.0), 2),
        "events_received_per_s": round((status.received - marks["received0"]) / elapsed),
        "events_missed": status.missed,
        "inbox_overflow": status.overflow,
        "stored": dashboard.store.stored,
        "visible_rows": dashboard.visible_rows,
        "cpu_percent": round(100 * (_cpu() - marks["cpu0"]) / elapsed, 1),
    }


def _p50_ms(samples) -> float:
    return round(1000 * percentile(sorted(samples), 0.5), 2) if samples else 0.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------- command ---------
def _free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise click.ClickException("no free X display number between :90 and :199")


def _start_xvfb() -> tuple[subprocess.Popen, str]:
    if shutil.which("Xvfb") is None:
        raise click.ClickException(
            "No DISPLAY and no Xvfb to start one: install xvfb or run in a graphical session."
        )
    n = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException("Xvfb did not start")
        time.sleep(0.05)
    return proc, f":{n}"


def measure(rate: float, duration_s: float, max_events: int, display: str) -> dict[str, Any]:
    """One run at ``rate`` events/s: publisher and window in their own processes."""
    with tempfile.TemporaryDirectory(prefix="bub", dir="/tmp") as tmp:
        endpoint = f"ipc://{tmp}/events.sock"
        env = dict(os.environ, DISPLAY=display)
        env.pop("BUSTED_UI_TEST_DIR", None)
        me = [sys.executable, "-m", "busted_gui.bench"]
        pub = subprocess.Popen(
            [*me, "publish", endpoint, str(rate), str(duration_s + WARMUP_S + 10)],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        try:
            if pub.stdout.readline().strip() != "ready":
                raise click.ClickException("the publisher did not start")
            out = subprocess.run(
                [*me, "window", endpoint, str(duration_s), str(max_events)],
                capture_output=True, text=True, env=env, timeout=duration_s + 120,
            )
        finally:
            pub.terminate()
            pub.wait(timeout=10)
        if out.returncode != 0:
            raise click.ClickException(f"the dashboard failed:\n{out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["rate"] = rate
        return result


@click.command(
    epilog="""\b
Examples:
  busted bench ui                         5,000 events/s for 10 s
  busted bench ui --rate 0 --rate 5000    idle against loaded
  busted bench ui --rate 20000 --json
""",
)
@click.option("--rate", type=click.FloatRange(min=0), multiple=True, default=(5000.0,),
              show_default=True, help="Incoming events per second (repeatable).")
@click.option("--duration", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds measured per rate (after a 2 s warm-up).")
@click.option("--max-events", type=click.IntRange(min=100), default=5000, show_default=True,
              help="Events the dashboard keeps.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def ui(rate: tuple[float, ...], duration: float, max_events: int, as_json: bool) -> None:
    """Frame rate of the real dashboard while events arrive at a given rate."""
    xvfb = None
    display = os.environ.get("DISPLAY", "")
    if not display:
        xvfb, display = _start_xvfb()
    try:
        results = [measure(r, duration, max_events, display) for r in rate]
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(timeout=10)
    report = {"display": "Xvfb (software GL)" if xvfb else display, "results": results}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"busted bench ui  ({report['display']}, {max_events} events kept)")
    click.echo(f"{'events/s in':>12} {'received/s':>11} {'fps':>7} {'p50 ms':>8} {'p99 ms':>8} "
               f"{'max ms':>8} {'cpu %':>6} {'missed':>7}")
    for r in results:
        click.echo(f"{r['rate']:>12,.0f} {r['events_received_per_s']:>11,} {r['fps']:>7.1f} "
                   f"{r['frame_ms_p50']:>8.2f} {r['frame_ms_p99']:>8.2f} {r['frame_ms_max']:>8.2f} "
                   f"{r['cpu_percent']:>6.1f} {r['events_missed'] + r['inbox_overflow']:>7,}")


def _main(argv: list[str]) -> None:
    kind = argv[0] if argv else ""
    if kind == "publish":
        publish(argv[1], float(argv[2]), float(argv[3]))
    elif kind == "window":
        result = window(argv[1], float(argv[2]), int(argv[3]))
        print(json.dumps(result), flush=True)
    else:
        sys.exit("usage: python -m busted_gui.bench publish|window ...")


if __name__ == "__main__":
    _main(sys.argv[1:])
