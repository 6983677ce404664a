"""`busted bench outputs`: what each network sink delivers into a real local receiver.

For each sink (webhook, otlp: a local HTTP endpoint; syslog+tcp, syslog+tls: Debian's
rsyslogd started for the run):

- throughput: a monitor spools ``--events`` synthetic events as fast as it can; the
  figure is the rate at which they arrive at the receiver (first to last), i.e. what
  the sender thread sustains through spool, encoding, network and acknowledgement;
- recovery: events flow at ``--rate`` while the receiver is down for ``--outage``
  seconds, then it comes back; the figures are the backlog it found, the time to catch
  up (every event produced so far received) and the drain rate, and whether anything
  was lost (every event the monitor wrote, counted by ``event_id``).

Each run is one ``busted monitor --source synthetic`` subprocess with a file sink beside
the measured one: the file holds the truth of what was produced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from busted.bench.receivers import HttpReceiver, Rsyslog, rsyslog_available

SINKS = ("webhook", "otlp", "syslog-tcp", "syslog-tls")


class Target:
    """A receiver and the --output flags that reach it."""

    def __init__(self, kind: str, workdir: Path, run: str) -> None:
        self.kind = kind
        self.http: HttpReceiver | None = None
        self.rsyslog: Rsyslog | None = None
        if kind in ("webhook", "otlp"):
            self.http = HttpReceiver(kind=kind, keep_records=False)
            url = self.http.url if kind == "webhook" else f"http://127.0.0.1:{self.http.port}"
            self.flags = ["--output", f"{kind}:{url}"]
        else:
            self.rsyslog = Rsyslog(workdir / f"rsyslog-{run}")
            port = self.rsyslog.tcp_port if kind == "syslog-tcp" else self.rsyslog.tls_port
            scheme = kind.replace("-", "+")
            self.flags = ["--output", f"{scheme}://127.0.0.1:{port}",
                          "--output-ca", str(self.rsyslog.tls_files["ca.pem"])]
            self.log = self.rsyslog.out["tcp" if kind == "syslog-tcp" else "tls"]
            self._seen: set[str] = set()
            self._lines = 0
            self._new_lines = NewLines(self.log)

    def _read_log(self) -> None:
        """rsyslog's new complete lines since the last look."""
        for line in self._new_lines().splitlines():
            self._lines += 1
            start = line.find(b'event_id="') + 10
            if start >= 10:
                self._seen.add(line[start:line.index(b'"', start)].decode())

    def ids(self) -> set[str]:
        if self.http is not None:
            with self.http.lock:
                return set(self.http.ids)
        self._read_log()
        return set(self._seen)

    def has_all(self, wanted: set[str]) -> bool:
        if self.http is not None:
            with self.http.lock:
                return all(i in self.http.ids for i in wanted)
        self._read_log()
        return wanted <= self._seen

    def count(self) -> int:
        """Events received so far (duplicates included; cheap)."""
        if self.http is not None:
            return self.http.events
        self._read_log()
        return self._lines

    def down(self) -> None:
        if self.http is not None:
            self.http.down()
        else:
            self.rsyslog.stop()

    def up(self) -> None:
        if self.http is not None:
            self.http.up()
        else:
            self.rsyslog.start()

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        else:
            self.rsyslog.close()


def _monitor(workdir: Path, name: str, target: Target, *args: str) -> tuple[subprocess.Popen, Path]:
    runtime_dir = workdir / f"rt-{name}"
    truth = workdir / f"{name}.jsonl"
    cmd = [sys.executable, "-m", "busted", "monitor", "--source", "synthetic", "--format", "none",
           "--runtime-dir", str(runtime_dir), "--spool-dir", str(workdir / f"spool-{name}"),
           "--output", f"file:{truth}", *target.flags, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    return proc, truth


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


def _wait(condition, timeout: float, what: str, proc: subprocess.Popen) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise click.ClickException(f"timed out waiting for {what}:\n{_stop(proc)[-2000:]}")
        time.sleep(0.1)
    return time.monotonic()


class NewLines:
    """The complete lines a growing file gained since the last call, reading only those
    (the truth file reaches 100+ MB: re-reading it would steal the CPU being measured)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def __call__(self) -> bytes:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return b""
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self.offset += end
        return data[:end]


class LineCount:
    """How many complete lines a growing file holds, counted incrementally."""

    def __init__(self, path: Path) -> None:
        self.new_lines = NewLines(path)
        self.lines = 0

    def __call__(self) -> int:
        self.lines += self.new_lines().count(b"\n")
        return self.lines


def throughput(kind: str, events: int, workdir: Path) -> dict[str, Any]:
    target = Target(kind, workdir, f"{kind}-tp")
    try:
        proc, _ = _monitor(workdir, f"{kind}-tp", target, "--rate", "0", "--count", str(events))
        try:
            _wait(lambda: target.count() > 0, 60, "the first event", proc)
            first, already = time.monotonic(), target.count()
            last = _wait(lambda: target.count() >= events, 600, "every event", proc)
        finally:
            _stop(proc)
        return {"events": events, "seconds": round(last - first, 2),
                "events_per_s": round((events - already) / max(last - first, 1e-3))}
    finally:
        target.close()


def recovery(kind: str, rate: int, outage: float, workdir: Path) -> dict[str, Any]:
    target = Target(kind, workdir, f"{kind}-rec")
    try:
        proc, truth = _monitor(workdir, f"{kind}-rec", target, "--rate", str(rate))
        produced_so_far = LineCount(truth)
        try:
            _wait(lambda: target.count() >= rate, 60, "events flowing", proc)
            target.down()
            time.sleep(outage)
            produced_at_return = produced_so_far()
            backlog = produced_at_return - len(target.ids())
            before = target.count()
            target.up()
            back = time.monotonic()
            resumed = _wait(lambda: target.count() > before, 120, "the first delivery", proc)

            wanted = set(_ids(truth, produced_at_return))

            def caught_up() -> bool:
                return target.count() >= produced_so_far() - rate // 10 and target.has_all(wanted)
            done = _wait(caught_up, 600, "the backlog to drain", proc)
        finally:
            err = _stop(proc)
        produced = set(_ids(truth))
        time.sleep(1.0)  # the last monitor's final deliveries
        received = target.ids()
        draining = done - resumed
        return {"rate": rate, "outage_s": outage, "backlog_events": backlog,
                "resumed_after_s": round(resumed - back, 2),  # the sender's backoff
                "catch_up_s": round(done - back, 2),
                "drain_events_per_s": round((backlog + rate * draining) / max(draining, 1e-3)),
                "produced": len(produced), "lost": len(produced - received),
                "log_tail": err.strip().splitlines()[-1:] if produced - received else []}
    finally:
        target.close()


def _ids(path: Path, limit: int | None = None) -> list[str]:
    out = []
    with path.open("rb") as f:
        for n, line in enumerate(f):
            if limit is not None and n >= limit:
                break
            try:
                out.append(json.loads(line)["event_id"])
            except (ValueError, KeyError):
                pass
    return out


@click.command(epilog="\b\nExamples:\n  busted bench outputs\n  busted bench outputs --outage 10 "
                      "--sink webhook --json")
@click.option("--events", type=int, default=50_000, show_default=True,
              help="Events for the throughput run of each sink.")
@click.option("--rate", type=int, default=1000, show_default=True,
              help="Events per second flowing during the outage run.")
@click.option("--outage", type=float, default=60.0, show_default=True,
              help="Seconds the receiver is down in the outage run.")
@click.option("--sink", "sinks", multiple=True, type=click.Choice(SINKS),
              help="Measure only these sinks (repeatable; default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def outputs(events: int, rate: int, outage: float, sinks: tuple[str, ...], as_json: bool) -> int:
    """Events/s through each network sink, and recovery after a receiver outage."""
    sinks = sinks or SINKS
    if any(s.startswith("syslog") for s in sinks) and not rsyslog_available():
        raise click.ClickException("the syslog runs need rsyslog and rsyslog-gnutls (make setup).")
    workdir = Path(tempfile.mkdtemp(prefix="busted-bench-outputs-", dir="/tmp"))
    workdir.chmod(0o711)  # the unprivileged worker account must traverse it
    say = (lambda *a: None) if as_json else (lambda msg: click.echo(msg, err=True))
    report: dict[str, Any] = {"cpus": os.cpu_count(), "sinks": {}}
    for kind in sinks:
        say(f"{kind}: throughput of {events:,} events ...")
        tp = throughput(kind, events, workdir)
        say(f"{kind}: {rate:,} events/s with the receiver down for {outage:.0f} s ...")
        rec = recovery(kind, rate, outage, workdir)
        report["sinks"][kind] = {"throughput": tp, "recovery": rec}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0
    click.echo(f"{'sink':<11} {'events/s':>9}   {'outage':>6} {'backlog':>8} {'resumed':>8} "
               f"{'caught up':>9} {'drain/s':>8} {'lost':>5}")
    for kind, r in report["sinks"].items():
        tp, rec = r["throughput"], r["recovery"]
        click.echo(f"{kind:<11} {tp['events_per_s']:>9,}   {rec['outage_s']:>5.0f}s "
                   f"{rec['backlog_events']:>8,} {rec['resumed_after_s']:>7.1f}s "
                   f"{rec['catch_up_s']:>8.1f}s "
                   f"{rec['drain_events_per_s']:>8,} {rec['lost']:>5}")
    click.echo(f"({os.cpu_count()} CPUs; receivers on loopback: Python http.server for webhook "
               "and OTLP, rsyslogd for syslog)")
    return 0
