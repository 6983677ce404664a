"""Event sources for the capture worker.

A source produces raw events (dicts in the shape of :mod:`busted.schema`) and is polled
by the capture loop, which numbers them (``seq``), batches them and hands them on
without ever blocking. Sources:

- ``bpf``: the kernel probes (:mod:`busted.sources.kernel`, capture's only user of bcc);
- ``synthetic``: realistic LLM / MCP / other traffic at a chosen rate;
- ``replay:FILE``: recorded events, one JSON object per line.
"""

from __future__ import annotations

from typing import Any, Protocol

from busted.config import MonitorConfig
from busted.errors import UsageError


class EventSource(Protocol):
    """What the capture loop needs from a source."""

    #: True once a finite source (replay, synthetic with a count) has nothing more.
    exhausted: bool

    def start(self) -> None:
        """Open / attach. Raise a BustedError with a clear message on failure."""

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        """Return the events available now, waiting at most ``timeout_s`` for some."""

    def feedback(self, command: dict[str, Any]) -> None:
        """Apply a command sent back by a downstream worker (e.g. a verdict)."""

    def stats(self) -> dict[str, int]:
        """The source's own counters for `busted status` (e.g. {"lost": 0})."""

    def close(self) -> None:
        """Detach and release everything."""


KINDS = ("bpf", "synthetic", "replay")


def parse_source(spec: str) -> tuple[str, str]:
    """Check a ``--source`` spelling; returns (kind, argument)."""
    kind, _, arg = spec.partition(":")
    if kind not in KINDS or (kind == "replay") != bool(arg):
        raise UsageError(
            f"unknown source {spec!r}.",
            "Use --source bpf (the default), --source synthetic or --source replay:FILE.",
        )
    return kind, arg


def open_source(config: MonitorConfig) -> EventSource:
    """Build the source named by ``config.source``."""
    kind, arg = parse_source(config.source)
    if kind == "synthetic":
        from busted.sources.synthetic import SyntheticSource

        return SyntheticSource(rate=config.rate, count=config.count)
    if kind == "replay":
        from busted.sources.replay import ReplaySource

        return ReplaySource(arg, rate=config.rate)
    from busted.sources.kernel import KernelSource  # kind == "bpf"

    return KernelSource(config)
