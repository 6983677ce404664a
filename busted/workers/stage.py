"""What a pipeline worker's role logic looks like to the worker loop.

Each of classify, identity, policy and output subclasses :class:`Stage` in its own
module (``busted/workers/<role>.py``). The loop in :mod:`busted.workers.runner` owns the
sockets, batching, counters and heartbeats; a stage only transforms events:

- ``process(events)`` gets a decoded batch and returns the events to forward (it may
  modify them in place, drop some, or add new ones). If it raises, the loop retries the
  batch one event at a time, forwards the events that failed unchanged, and counts the
  failures by exception type — one bad message never stops a worker.
- ``tick(now)`` is called about every 100 ms (timeouts, flushing reassembly buffers,
  policy reloads) and returns events to forward.
- ``close()`` is called once at shutdown and returns what is left to forward.
- ``feedback(command)`` (set by the loop) sends a small dict back to the capture worker,
  e.g. a verdict that a connection is not interesting.
- ``passthrough = True`` tells the loop the stage does not look at events at all, so
  raw frames are forwarded without decoding (an order of magnitude cheaper);
  ``wants(frame)`` says the same per batch (e.g. classify only needs batches that
  carry raw ``payload`` bytes, which it can tell from the encoded frame).
- ``read_only = True`` says the stage reads events but never changes them, so the
  loop forwards the frame it received instead of encoding the batch again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from busted.config import MonitorConfig

Event = dict[str, Any]


class Stage:
    """Base class of a pipeline worker's role logic."""

    role = "stage"
    passthrough = False
    read_only = False

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        # Extra counters a stage wants in `busted status` (e.g. {"reloads": 3}).
        self.stats: Counter[str] = Counter()
        self.feedback: Callable[[dict[str, Any]], None] = lambda command: None

    def setup(self) -> None:
        """Called once in the worker process, before privileges are dropped."""

    def wants(self, frame: bytes) -> bool:
        """Whether this encoded batch needs decoding and ``process``; if not, the loop
        forwards the frame untouched. Must be cheap and never raise."""
        return True

    def process(self, events: list[Event]) -> list[Event]:
        return events

    def tick(self, now: float) -> list[Event]:
        return []

    def close(self) -> list[Event]:
        return []

    @staticmethod
    def now() -> float:
        return time.monotonic()
