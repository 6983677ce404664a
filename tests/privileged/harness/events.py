"""The events a monitor printed, and waiting on them with a deadline.

:class:`EventLog` is filled by the monitor's stdout reader thread; tests wait for an event
(or a condition over all events) instead of sleeping. :func:`payload_text` reads the
captured plaintext of an event whatever stage shaped it: ``tls_payload`` once the classify
worker has run, the raw ``payload`` otherwise (bytes, text, base64 or a list of ints,
depending on how the JSON output rendered bytes).
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]

TLS_TYPES = ("TLS_DATA_WRITE", "TLS_DATA_READ")
PLAIN_TYPES = ("DATA_WRITE", "DATA_READ")


def payload_text(event: Event) -> str:
    """The captured plaintext carried by ``event`` ("" if none)."""
    text = event.get("tls_payload")
    if isinstance(text, str) and text:
        return text
    raw = event.get("payload")
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if isinstance(raw, list) and all(isinstance(b, int) for b in raw):
        return bytes(raw).decode("utf-8", "replace")
    if isinstance(raw, dict):  # e.g. {"base64": "..."} or {"hex": "..."}
        for key, decode in (("base64", base64.b64decode), ("b64", base64.b64decode),
                            ("hex", binascii.unhexlify)):
            if isinstance(raw.get(key), str):
                return decode(raw[key]).decode("utf-8", "replace")
    if isinstance(raw, str):
        return raw
    return ""


def is_data(event: Event) -> bool:
    return event.get("event_type") in TLS_TYPES + PLAIN_TYPES


def direction(event: Event) -> str:
    value = event.get("direction")
    if value:
        return value
    return "write" if str(event.get("event_type", "")).endswith("WRITE") else "read"


class EventLog:
    """Thread-safe list of events with deadline-bounded waits."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        # The host's other processes are traced too (easily 100k events in a session
        # on a busy machine): waits for one pid look only at that pid's events.
        self.by_pid: dict[int, list[Event]] = {}
        # Set by the producer: returns why no more events can come (e.g. the monitor
        # died), so waits fail at once instead of running out their deadline.
        self.health: Callable[[], str | None] = lambda: None
        self._cond = threading.Condition()

    def add(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self.by_pid.setdefault(event.get("pid"), []).append(event)
            self._cond.notify_all()

    def snapshot(self) -> list[Event]:
        with self._cond:
            return list(self.events)

    def for_pid(self, pid: int) -> list[Event]:
        with self._cond:
            return list(self.by_pid.get(pid, ()))

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 15.0,
                 what: str = "a matching event", pid: int | None = None,
                 only_pid: bool = True) -> Event:
        """The first event matching ``predicate``; AssertionError after ``timeout``."""
        found = self.wait_until(lambda events: next((e for e in events if predicate(e)), None),
                                timeout, what, pid, only_pid)
        return found

    def wait_until(self, condition: Callable[[list[Event]], Any], timeout: float = 15.0,
                   what: str = "a condition on the events", pid: int | None = None,
                   only_pid: bool = True) -> Any:
        """Wait until ``condition(events)`` returns something truthy, and return it.

        ``condition`` sees the events of ``pid`` only when it is given (and ``only_pid``),
        else all of them. On timeout, the AssertionError lists what was seen (for ``pid``
        if given), so the failure says whether the monitor saw nothing or the wrong thing.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if pid is not None and only_pid:
                    result = condition(list(self.by_pid.get(pid, ())))
                else:
                    result = condition(list(self.events))
                if result:
                    return result
                dead = self.health()
                if dead:
                    raise AssertionError(f"while waiting for {what}: {dead}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                                         + self.describe(pid))
                self._cond.wait(min(left, 0.5))

    def describe(self, pid: int | None = None, limit: int = 12) -> str:
        events = self.snapshot()
        mine = events if pid is None else self.for_pid(pid)
        lines = [f"monitor printed {len(events)} events in all"
                 + (f", {len(mine)} for pid {pid}" if pid is not None else "")]
        for e in mine[-limit:]:
            lines.append("  " + summarize(e))
        if pid is not None and not mine and events:
            pids = sorted({(e.get("pid"), e.get("process_name")) for e in events},
                          key=lambda p: str(p))[:20]
            lines.append(f"  pids seen: {pids}")
        return "\n".join(lines)


def summarize(event: Event) -> str:
    keys = ("event_type", "pid", "process_name", "conn_id", "direction", "sni", "dst_ip",
            "dst_port", "bytes", "dns_name", "llm_provider", "llm_model", "content_class",
            "truncated")
    fields = " ".join(f"{k}={event[k]!r}" for k in keys if event.get(k) not in (None, "", 0))
    text = payload_text(event)
    return f"{fields} text[{len(text)}]={text[:80]!r}"


def stream_text(events: list[Event], pid: int, want_direction: str) -> str:
    """All plaintext of ``pid`` in one direction, in the monitor's order (seq)."""
    chosen = [e for e in events
              if e.get("pid") == pid and is_data(e) and direction(e) == want_direction]
    chosen.sort(key=lambda e: (e.get("seq") or 0, e.get("timestamp") or 0))
    return "".join(payload_text(e) for e in chosen)
