"""Demo mode of ``busted ui --demo`` (and the UI benchmark): no daemon needed.

The events come from :class:`busted.sources.synthetic.TrafficGenerator` — the same
realistic generator behind ``busted monitor --source synthetic`` — complete with the
policy decisions and identities the daemon's stages would add. :class:`DemoFeed`
runs it on a thread at a given rate and looks to the dashboard exactly like the live
stream (same inbox and status); :func:`demo_stats` plays the daemon's counters.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from busted.sources.synthetic import TrafficGenerator

Event = dict[str, Any]


def demo_stats(produced: int, started: float, now: float) -> dict[str, Any]:
    """Daemon-like stats for the demo header (shape of the ``stats`` topic)."""
    dropped = produced // 9000
    workers = {
        role: {
            "pid": 3100 + i,
            "state": "running",
            "restarts": 1 if role == "classify" and now - started > 45 else 0,
            "received": produced,
            "sent": produced,
            "dropped": dropped if role == "classify" else 0,
            "errors": 0,
        }
        for i, role in enumerate(("capture", "classify", "identity", "policy", "output"))
    }
    return {
        "time": now,
        "uptime_s": now - started + 3600 * 5 + 1260,
        "workers": workers,
        "produced": produced,
        "dropped": dropped,
        "lost": produced // 25000,
    }


def blind_spot(when: float) -> Event:
    """A BLIND_SPOT as capture reports it: a Java service whose TLS busted cannot read."""
    return {
        "event_type": "BLIND_SPOT", "timestamp": when, "pid": 4711, "uid": 1001,
        "process_name": "java", "exe": "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        "sni": "api.openai.com", "provider": "OpenAI", "dst_ip": "162.159.140.245",
        "dst_port": 443, "bytes": 18_432, "tls_library": "Java",
        "blind_reason": "Java's TLS (JSSE) runs inside the JVM, where uprobes cannot read it",
        "blind_advice": "give the JVM an OpenSSL-backed provider, or send its traffic "
                        "through a proxy busted sees",
    }


class DemoFeed:
    """Runs a :class:`TrafficGenerator` on a thread; same interface as the live stream."""

    def __init__(self, rate: float = 40.0, seed: int = 7, inbox_size: int = 20_000) -> None:
        from busted_gui.stream import ConnectionStatus, Inbox

        self.rate = rate
        self.inbox = Inbox(inbox_size)
        self._status = ConnectionStatus(state="demo", endpoint="demo")
        self._gen = TrafficGenerator(seed=seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busted-ui-demo", daemon=True)
        self._started = time.time()

    def start(self) -> None:
        # Five minutes of history first, so the plot and the tables are not empty on
        # open: a slow swell with a few bursts, like agents that work in waves.
        now = time.time()
        for back in range(299, 0, -1):
            wave = 0.45 + 0.35 * math.sin(back / 38.0) + 0.2 * math.sin(back / 7.0)
            if back % 97 < 3:
                wave += 1.2
            batch = self._gen.events(max(1, int(self.rate * max(0.1, wave))), now - back)
            if back % 120 == 7:
                batch.append(blind_spot(now - back))
            self.inbox.put(batch, now - back)
        self._thread.start()

    def _run(self) -> None:
        produced = 0
        last = time.monotonic()
        debt = 0.0
        while not self._stop.wait(0.05):
            now = time.monotonic()
            # Bursty, like real agents: a slow wave plus random spikes.
            phase = (time.time() % 60) / 60
            burst = 3.0 if self._gen._rng.random() < 0.02 else 1.0
            debt += (now - last) * self.rate * (0.6 + 0.8 * phase) * burst
            last = now
            n = int(debt)
            if n:
                debt -= n
                produced += n
                self.inbox.put(self._gen.events(n))
            self._status.daemon_stats = demo_stats(
                produced + self.inbox.received, self._started, time.time()
            )

    def drain(self, max_events: int) -> list[Event]:
        return self.inbox.drain(max_events)

    def status(self) -> Any:
        self._status.received = self.inbox.received
        self._status.last_event = self.inbox.last_put
        return self._status

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)
