"""Prometheus metrics of the running monitor (``busted monitor --metrics HOST:PORT``).

Served by prometheus-client's HTTP server on a thread of the supervisor; each scrape
reads the supervisor's counters (the same ones `busted status` shows), so nothing is
counted twice and scrapes cost the pipeline nothing. Bind to loopback unless a
Prometheus elsewhere must reach it: the counters are not secret, but nobody else needs
them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from busted.errors import UsageError

_TOTALS = (
    ("produced", "Events produced by capture."),
    ("delivered", "Events that reached the output worker."),
    ("dropped", "Events dropped on a hop because the next worker could not keep up."),
    ("lost", "Events lost without a drop counter (kernel ring buffer, worker crashes)."),
    ("kernel_lost", "Kernel ring-buffer records lost."),
)
_PER_WORKER = ("received", "sent", "dropped", "errors", "restarts")


def parse_address(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--metrics {spec}: write HOST:PORT, e.g. 127.0.0.1:9477.")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Collector:
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.stats = stats

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.stats()
        for key, doc in _TOTALS:
            family = CounterMetricFamily(f"busted_events_{key}", doc)
            family.add_metric([], stats.get(key, 0))
            yield family
        for key in _PER_WORKER:
            family = CounterMetricFamily(f"busted_worker_{key}", f"Per-worker {key}.",
                                         labels=["worker"])
            for role, w in stats["workers"].items():
                family.add_metric([role], w.get(key, 0))
            yield family
        capture = stats["workers"].get("capture", {})
        for key, doc in _ENFORCE_COUNTS:
            family = CounterMetricFamily(f"busted_enforce_{key}", doc)
            family.add_metric([], capture.get(f"enforce_{key}", 0))
            yield family
        for key in ("hold_ms_p50", "hold_ms_p99"):
            gauge = GaugeMetricFamily(f"busted_enforce_{key}", "Recent latency a held write waited "
                                      "for its verdict, milliseconds (--enforce).")
            gauge.add_metric([], float(capture.get(f"enforce_{key}", 0.0)))
            yield gauge
        blind = CounterMetricFamily("busted_blind_spots", "BLIND_SPOT events: TLS connections "
                                    "to LLM hosts or of agents whose plaintext is not seen.")
        blind.add_metric([], capture.get("blind_spots", 0))
        yield blind
        gauge = GaugeMetricFamily("busted_blind_processes", "Running processes with a blind "
                                  "connection (busted status lists them).")
        gauge.add_metric([], float(capture.get("blind_processes", 0.0)))
        yield gauge
        yield from _sink_families(stats)
        up = GaugeMetricFamily("busted_worker_up", "1 when the worker is running.",
                               labels=["worker"])
        for role, w in stats["workers"].items():
            up.add_metric([role], 1.0 if w.get("state") == "running" else 0.0)
        yield up


_ENFORCE_COUNTS = (
    ("holds", "Writes held until their verdict (--enforce)."),
    ("released", "Held writes released after an allow."),
    ("killed", "Processes killed after a deny."),
    ("late_released", "Held writes resumed at the deadline (fail open)."),
    ("late_killed", "Held writes killed at the deadline (--fail-closed)."),
    ("would_kill", "Denies --dry-run did not act on."),
)


_SINK_COUNTS = (
    ("sent", "Events the receiver acknowledged (--output sinks)."),
    ("retried", "Events sent again after a failed or unconfirmed delivery."),
    ("dropped", "Events deleted from the spool at --spool-max before delivery."),
    ("disk_errors", "Events that could not be spooled (disk full, I/O error)."),
    ("errors", "Failed delivery attempts."),
)
_SINK_GAUGES = (
    ("spooled_events", "spooled_events", "Events in the spool not yet acknowledged."),
    ("spooled_bytes", "spooled_bytes", "Bytes in the spool not yet acknowledged."),
    ("oldest_age_s", "oldest_spooled_age_seconds", "Age of the oldest event not yet acknowledged."),
)


def _sink_families(stats: dict[str, Any]):
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from busted.report import sink_rows
    from busted.sinks import STATES

    rows = sink_rows(stats)
    for key, doc in _SINK_COUNTS:
        family = CounterMetricFamily(f"busted_sink_{key}", doc, labels=["sink", "kind"])
        for row in rows:
            family.add_metric([row["label"], row.get("kind", "")], row.get(key, 0))
        yield family
    for key, name, doc in _SINK_GAUGES:
        family = GaugeMetricFamily(f"busted_sink_{name}", doc, labels=["sink", "kind"])
        for row in rows:
            if key in row:
                family.add_metric([row["label"], row.get("kind", "")], float(row[key]))
        yield family
    state = GaugeMetricFamily("busted_sink_state", "1 for the sink's current state: sending, "
                              "retrying, or failing (a configuration error, not retried).",
                              labels=["sink", "kind", "state"])
    for row in rows:
        for name in STATES:
            state.add_metric([row["label"], row.get("kind", ""), name],
                             1.0 if row.get("state") == name else 0.0)
    yield state


def serve(address: str, stats: Callable[[], dict[str, Any]]) -> None:
    """Start the metrics endpoint; returns at once (the server runs on a daemon thread)."""
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
    except ImportError as exc:
        raise UsageError("--metrics needs prometheus-client.",
                         "Install the extra: pip install 'busted[metrics]'.") from exc
    host, port = parse_address(address)
    registry = CollectorRegistry()
    registry.register(_Collector(stats))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(f"--metrics {address}: cannot listen there ({exc.strerror}).") from exc
