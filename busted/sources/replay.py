"""A replay source: recorded events, one JSON object per line (what
``busted monitor --format json`` prints), fed back through the pipeline.

Timestamps are replaced by the replay time so that latency and rates mean something;
the original is kept in nothing (it would be a field the schema does not know).
Blank lines are skipped; a malformed line is counted and skipped, never fatal.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from busted.errors import UsageError

log = logging.getLogger("busted.replay")


class ReplaySource:
    """Replays ``path`` at ``rate`` events per second (0 = as fast as possible)."""

    CHUNK = 512

    def __init__(self, path: str, rate: float = 0.0) -> None:
        self.path = Path(path)
        self.rate = rate
        self.exhausted = False
        self.bad_lines = 0
        self.produced = 0
        self._file = None
        self._start = 0.0

    def start(self) -> None:
        try:
            self._file = self.path.open("r", encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(
                f"cannot read the replay file {self.path}: {exc.strerror}.",
                "Give a file of JSON lines, as written by `busted monitor --format json`.",
            ) from exc
        self._start = time.monotonic()

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        budget = self.CHUNK
        if self.rate:
            budget = min(budget, int((time.monotonic() - self._start) * self.rate) - self.produced)
            if budget <= 0:
                time.sleep(min(timeout_s, 1 / self.rate))
                return []
        events: list[dict[str, Any]] = []
        now = time.time()
        while len(events) < budget and self._file is not None:
            line = self._file.readline()
            if not line:
                self.exhausted = True
                self._file.close()
                self._file = None
                break
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self.bad_lines += 1
                if self.bad_lines <= 5:
                    log.warning("%s: skipped a malformed line: %s", self.path, exc)
                continue
            event.pop("seq", None)
            event["timestamp"] = now
            events.append(event)
        self.produced += len(events)
        return events

    def feedback(self, command: dict[str, Any]) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"bad_lines": self.bad_lines}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
