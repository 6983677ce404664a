"""Human rendering of the supervisor's counters: `busted status` and the exit summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from busted.workers import ROLES


def worker_table(stats: dict[str, Any]) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for name, justify in (("worker", "left"), ("pid", "right"), ("state", "left"),
                          ("uptime", "right"), ("restarts", "right"), ("received", "right"),
                          ("sent", "right"), ("dropped", "right"), ("errors", "right"),
                          ("notes", "left")):
        table.add_column(name, justify=justify)
    for role in ROLES:
        w = stats["workers"].get(role, {})
        notes = []
        for key in ("missing", "lost", "merged", "verdicts", "evicted_connections",
                    "evicted_bytes", "bad_lines", "reloads", "policy_errors"):
            if w.get(key):
                notes.append(f"{key} {w[key]}")
        if w.get("enforce_holds") or w.get("enforce_killed") or w.get("enforce_blocked_destinations"):
            notes.append(_enforce_note(w))
        if w.get("last_exit"):
            notes.append(f"last exit: {w['last_exit']}")
        table.add_row(role, str(w.get("pid") or "-"), w.get("state", "?"),
                      f"{w.get('uptime_s', 0):.0f}s", str(w.get("restarts", 0)),
                      f"{w.get('received', 0):,}", f"{w.get('sent', 0):,}",
                      f"{w.get('dropped', 0):,}", f"{w.get('errors', 0):,}", ", ".join(notes))
    return table


def _enforce_note(w: dict[str, Any]) -> str:
    late = w.get("enforce_late_released", 0) + w.get("enforce_late_killed", 0)
    return (f"holds {w.get('enforce_holds', 0)} (p50 {w.get('enforce_hold_ms_p50', 0):.1f} ms, "
            f"p99 {w.get('enforce_hold_ms_p99', 0):.1f} ms), killed {w.get('enforce_killed', 0)}, "
            f"late {late}, blocked destinations {w.get('enforce_blocked_destinations', 0)}")


def blind_table(entries: list[dict[str, Any]]) -> Table:
    """Blind programs (busted.kernel.blindspots.BlindSpots.report): who, where, which TLS
    library, why, and what to do."""
    table = Table(show_edge=False, header_style="bold")
    for name in ("pid", "program", "destination", "TLS library", "why", "what to do"):
        table.add_column(name, justify="right" if name == "pid" else "left")
    for e in entries:
        pid = str(e.get("pid") or "-") + ("" if e.get("alive") or not e.get("pid") else " (gone)")
        table.add_row(pid, e.get("exe") or e.get("process_name") or "?",
                      e.get("destination") or "-", e.get("tls_library") or "?",
                      e.get("blind_reason") or "", e.get("blind_advice") or "")
    return table


def totals_line(stats: dict[str, Any]) -> str:
    return (f"produced {stats.get('produced', 0):,}, delivered {stats.get('delivered', 0):,} "
            f"(merged into messages {stats.get('merged', 0):,}), "
            f"dropped {stats.get('dropped', 0):,}, lost {stats.get('lost', 0):,} "
            f"(kernel {stats.get('kernel_lost', 0):,})")


def sink_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per --output sink: its state and gauges, with its counters (which the
    supervisor adds up over output restarts as ``sink:LABEL:KEY``)."""
    output = stats.get("workers", {}).get("output", {})
    rows = []
    for label, info in (output.get("sinks") or {}).items():
        row = {"label": label, **info}
        prefix = f"sink:{label}:"
        row.update({k[len(prefix):]: v for k, v in output.items() if k.startswith(prefix)})
        rows.append(row)
    return rows


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def sink_table(stats: dict[str, Any]) -> Table | None:
    rows = sink_rows(stats)
    if not rows:
        return None
    table = Table(show_edge=False, header_style="bold")
    for name, justify in (("output", "left"), ("state", "left"), ("sent", "right"),
                          ("spooled", "right"), ("oldest", "right"), ("retried", "right"),
                          ("dropped", "right"), ("last error", "left")):
        table.add_column(name, justify=justify)
    for row in rows:
        spooled = "-" if "spooled_events" not in row else \
            f"{row['spooled_events']:,} ({_bytes(row.get('spooled_bytes', 0))})"
        oldest = f"{row['oldest_age_s']:.0f}s" if row.get("oldest_age_s") else "-"
        dropped = row.get("dropped", 0) + row.get("disk_errors", 0)
        error = row.get("last_error") or ""
        if row.get("disk_errors"):
            error = f"{row['disk_errors']:,} not spooled (disk); " + error
        if row.get("rejected"):
            error = f"{row['rejected']:,} rejected by the collector; " + error
        table.add_row(row.get("target", row["label"]), row.get("state", "?"),
                      f"{row.get('sent', 0):,}", spooled, oldest, f"{row.get('retried', 0):,}",
                      f"{dropped:,}", error.rstrip("; "))
    return table


def _console(stderr: bool = False) -> Console:
    # Piped output (logs, CI) gets a wide fixed width instead of a squeezed table.
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=150)


def print_status(stats: dict[str, Any], console: Console | None = None) -> None:
    console = console or _console()
    console.print(f"busted monitor pid {stats.get('pid')} — source {stats.get('source')}, "
                  f"runtime dir {stats.get('runtime_dir')}, up {stats.get('uptime_s', 0):.0f}s"
                  + (" (stopping)" if stats.get("stopping") else ""))
    console.print(worker_table(stats))
    console.print(totals_line(stats))
    if (sinks := sink_table(stats)) is not None:
        console.print(sinks)
    if stats.get("blind"):
        console.print(f"⚠ blind programs: TLS busted sees going out but cannot read "
                      f"({len(stats['blind'])}; `busted doctor --coverage` lists every process)")
        console.print(blind_table(stats["blind"]))


def print_summary(stats: dict[str, Any]) -> None:
    """The final summary on exit, on stderr (stdout carries events)."""
    console = _console(stderr=True)
    console.print(f"busted: stopped after {stats.get('uptime_s', 0):.1f}s — {totals_line(stats)}")
    console.print(worker_table(stats))
    if (sinks := sink_table(stats)) is not None:
        console.print(sinks)
