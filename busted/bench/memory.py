"""``busted bench memory``: what the whole daemon holds in memory, idle and under load.

The figure a platform team compares is the sum of PSS over the daemon's processes (as
``smem`` counts it): each process's private pages plus its share of the pages it shares
with others (the Python binary, libraries), so the sum is what the daemon really costs
the machine. RSS is shown too (it counts shared pages once per process, so its sum
overstates), and USS (private pages only: what stopping one process would give back).

Three moments: idle (after start-up settled), while a loopback TLS client runs
request/response exchanges at about ``--rate`` published events per second (the events
the monitor actually published in that time are counted and reported, not assumed; the
largest snapshot is kept), and idle again after that load. The last one is the figure to
plan for: the workers are forked from one fork server and share its pages until they
write to them, and running their code the first time writes to many (reference counts),
so a worker's private share grows as it meets its first events, then stays.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import click

from busted.bench.measure import BenchRun, MonitorRun, make_workdir, monitor_running

SETTLE_S = 3.0  # after `ready`: the workers' first heartbeats and rescans are done
EVENTS_PER_REQUEST = 4  # client write + read, server read + write (both ends traced)


def memory_of(pid: int) -> dict[str, int] | None:
    """PSS, RSS and USS of one process in KiB (from /proc/PID/smaps_rollup)."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("Pss", "Rss", "Private_Clean", "Private_Dirty"):
                    fields[key] = int(value.split()[0])
    except (OSError, ValueError):
        return None
    return {"pss_kib": fields.get("Pss", 0), "rss_kib": fields.get("Rss", 0),
            "uss_kib": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def _role(proc) -> str:
    """A worker's role from its title (``busted: capture``); the supervisor otherwise."""
    try:
        cmdline = proc.cmdline()
    except Exception:  # noqa: BLE001 - gone meanwhile
        return "?"
    title = " ".join(cmdline)
    if title.startswith("busted: "):
        return title.split("busted: ", 1)[1].split()[0]
    # multiprocessing's helpers beside the workers: the fork server they are forked
    # from, and the resource tracker it always starts with it
    if "multiprocessing.forkserver" in title:
        return "fork-server"
    return "mp-tracker" if "resource_tracker" in title else "supervisor"


def snapshot(root_pid: int) -> dict[str, Any]:
    """Memory of the monitor's process tree, per role and summed (MB, one decimal)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    roles: dict[str, dict[str, float]] = {}
    for proc in procs:
        mem = memory_of(proc.pid)
        if mem is None:
            continue
        role = _role(proc)
        entry = roles.setdefault(role, {"pss_mb": 0.0, "rss_mb": 0.0, "uss_mb": 0.0})
        for key in ("pss", "rss", "uss"):
            entry[f"{key}_mb"] = round(entry[f"{key}_mb"] + mem[f"{key}_kib"] / 1024, 1)
    total = {key: round(sum(r[key] for r in roles.values()), 1)
             for key in ("pss_mb", "rss_mb", "uss_mb")}
    return {"roles": roles, "total": total}


class LoadWatch:
    """While the client runs: count the events the monitor publishes and keep the
    largest memory snapshot (the monitor's stream socket is read only here meanwhile)."""

    def __init__(self, monitor: MonitorRun) -> None:
        self.monitor = monitor
        self.events = 0
        self.seconds = 0.0
        self.peak: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from busted import schema

        assert self.monitor.proc is not None and self.monitor.sub is not None
        started = time.monotonic()
        next_sample = started + 1.0
        while not self._stop.is_set():
            if self.monitor.sub.poll(50):
                _, frame = self.monitor.sub.recv_multipart()
                self.events += len(schema.decode_batch(frame))
            if time.monotonic() >= next_sample:
                next_sample += 1.0
                snap = snapshot(self.monitor.proc.pid)
                if snap and snap["total"]["pss_mb"] > self.peak.get("total", {}).get("pss_mb", 0):
                    self.peak = snap
        self.seconds = time.monotonic() - started


@click.command("memory")
@click.option("--rate", type=click.IntRange(10, 20_000), default=1000, show_default=True,
              help="Published events per second to aim for while loaded.")
@click.option("--duration", type=click.FloatRange(2, 600), default=10.0, show_default=True,
              help="Seconds of load.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def memory(rate: int, duration: float, as_json: bool) -> int:
    """What the whole daemon holds in memory (PSS summed over its processes, RSS, USS),
    idle and at about --rate events/s from a loopback TLS client (root)."""
    from busted.bench.probes import Bench

    run = BenchRun("memory", as_json)
    say = run.say
    workdir = make_workdir()
    bench = Bench(workdir, calls=0, duration=duration, agent_duration=0, say=say)
    # A request and its answer take ~0.5 ms on loopback; the pause sets the rate.
    pause_ms = max(0.0, EVENTS_PER_REQUEST * 1000 / max(1, rate) - 0.5)
    try:
        with monitor_running(workdir, "memory", ()) as monitor:
            say(f"monitor ready in {monitor.ready_s:.1f} s; letting it settle")
            time.sleep(SETTLE_S)
            idle = snapshot(monitor.proc.pid)
            say(f"idle: {idle['total']['pss_mb']} MB PSS; now ~{rate} events/s for {duration:g} s")
            watch = LoadWatch(monitor)
            result = bench.run(["latency", "--size", "1024", "--duration", str(duration),
                                "--pause-ms", f"{pause_ms:.3f}"], monitor=monitor,
                               around_go=(watch.start, watch.stop))
            loaded = watch.peak or snapshot(monitor.proc.pid)
            time.sleep(SETTLE_S)
            after = snapshot(monitor.proc.pid)
            say(f"idle again after the load: {after['total']['pss_mb']} MB PSS")
    finally:
        bench.close()
    report = {
        "idle": idle,
        "loaded": loaded,
        "after_load": after,
        "load": {"target_events_per_s": rate,
                 "published_events_per_s": round(watch.events / max(watch.seconds, 1e-6)),
                 "requests_per_s": round(result.get("requests_per_s", 0))},
    }
    return run.finish(report, _print)


def _print(report: dict[str, Any]) -> None:
    click.echo("Memory of the whole daemon (MB; PSS summed over its processes is what it "
               "costs the machine)")
    click.echo(f"{'process':<12}{'idle PSS':>10}{'RSS':>8}{'USS':>8}"
               f"{'loaded PSS':>12}{'RSS':>8}{'USS':>8}{'after PSS':>11}")
    idle, loaded, after = report["idle"], report["loaded"], report["after_load"]

    def of(snap: dict[str, Any], role: str) -> dict[str, float]:
        return snap.get("total", {}) if role == "total" else snap.get("roles", {}).get(role, {})

    for role in [*sorted(idle.get("roles", {})), "total"]:
        a, b, c = of(idle, role), of(loaded, role), of(after, role)
        click.echo(f"{role:<12}{a.get('pss_mb', 0):>10}{a.get('rss_mb', 0):>8}"
                   f"{a.get('uss_mb', 0):>8}{b.get('pss_mb', 0):>12}{b.get('rss_mb', 0):>8}"
                   f"{b.get('uss_mb', 0):>8}{c.get('pss_mb', 0):>11}")
    load = report["load"]
    click.echo(f"loaded: {load['published_events_per_s']} events/s published "
               f"({load['requests_per_s']} loopback TLS requests/s)")
