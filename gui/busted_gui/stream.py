"""The dashboard's subscription to the daemon's published stream.

Sockets: one ZeroMQ SUB, *connected* to ``ipc://<runtime_dir>/events.sock`` (bound by
the output worker), subscribed to the ``events`` and ``stats`` topics. It lives on a
background thread that decodes batches into a bounded :class:`Inbox`; the render loop
only drains the inbox, so it never waits on the socket.

ZeroMQ connects to ipc lazily and retries silently, so a missing daemon or a socket the
user may not open would just look like silence. The thread therefore checks the socket
file itself (exists? can we open it?) before connecting and every half second after,
reports the problem with what to do, and reconnects on its own when the daemon
(re)starts (a new socket file). Sequence numbers (``seq``) tell how many events this
viewer never saw (slow subscriber, daemon-side drops between stages).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from busted import schema

log = logging.getLogger("busted.ui.stream")

Event = dict[str, Any]

STALE_AFTER_S = 3.0  # the daemon publishes stats every second; silence this long is stale
RECHECK_S = 0.5  # how often the socket file is looked at again
RCVHWM = 1_000  # batches (~64 events each) libzmq may queue for us; beyond, seq gaps

# Connection states (ConnectionStatus.state).
CONNECTING = "connecting"
LIVE = "live"
STALE = "stale"
NO_DAEMON = "no-daemon"
PERMISSION = "permission"
ERROR = "error"
DEMO = "demo"

PROBLEM_STATES = (NO_DAEMON, PERMISSION, ERROR)


@dataclass
class ConnectionStatus:
    """What the header shows about the stream (read by the render loop)."""

    state: str = CONNECTING
    endpoint: str = ""
    message: str = ""
    hint: str = ""
    events_per_s: float = 0.0
    received: int = 0  # events received since start
    missed: int = 0  # events skipped according to seq gaps
    overflow: int = 0  # events dropped because the dashboard fell behind
    decode_errors: int = 0
    daemon_restarts: int = 0  # seq went back: a new daemon run
    last_event: float = 0.0  # wall clock of the last event received
    last_message: float = 0.0  # wall clock of the last message of any kind
    connected_at: float = 0.0  # wall clock of the last (re)connect
    daemon_stats: dict[str, Any] | None = field(default=None)


class RateMeter:
    """Events per second over the last few seconds, from per-second counts."""

    def __init__(self, window_s: int = 3) -> None:
        self.window_s = window_s
        self._counts: deque[tuple[int, int]] = deque()

    def add(self, n: int, now: float) -> None:
        second = int(now)
        if self._counts and self._counts[-1][0] == second:
            self._counts[-1] = (second, self._counts[-1][1] + n)
        else:
            self._counts.append((second, n))
        while self._counts and self._counts[0][0] < second - self.window_s - 1:
            self._counts.popleft()

    def rate(self, now: float) -> float:
        second = int(now)
        total = sum(n for s, n in self._counts if second - self.window_s <= s < second)
        return total / self.window_s


class Inbox:
    """A bounded, thread-safe hand-over from the receiving thread to the render loop.

    If the dashboard falls behind, the oldest undelivered events go first and are
    counted (``overflow``): a stuck window must not grow memory without bound.
    """

    def __init__(self, maxlen: int = 20_000) -> None:
        self._queue: deque[Event] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.maxlen = maxlen
        self.received = 0
        self.overflow = 0
        self.last_put = 0.0
        self.meter = RateMeter()

    def put(self, events: list[Event], now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            excess = len(self._queue) + len(events) - self.maxlen
            if excess > 0:
                self.overflow += excess
            self._queue.extend(events)
            self.received += len(events)
            self.last_put = now
            self.meter.add(len(events), now)

    def drain(self, max_events: int) -> list[Event]:
        with self._lock:
            n = min(max_events, len(self._queue))
            popleft = self._queue.popleft
            return [popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._queue)

    def rate(self, now: float | None = None) -> float:
        with self._lock:
            return self.meter.rate(time.time() if now is None else now)


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint (None for other transports)."""
    if endpoint.startswith("ipc://"):
        return Path(endpoint[len("ipc://") :])
    return None


def check_socket(path: Path) -> tuple[str, str, str]:
    """(state, message, hint) for an ipc socket file; state is "" when it looks usable.

    Done by hand because a zmq connect to ipc never fails: it just waits.
    """
    try:
        os.stat(path)
    except PermissionError:
        return _permission(path)
    except FileNotFoundError:
        parent = path.parent
        if parent.exists() and not os.access(parent, os.X_OK):
            return _permission(path)
        return (
            NO_DAEMON,
            f"No Busted daemon is publishing at {path}.",
            "Start it with: sudo busted monitor"
            + ("" if str(path.parent) == "/run/busted" else f" --runtime-dir {path.parent}"),
        )
    except OSError as exc:
        return ERROR, f"Cannot look at {path}: {exc.strerror}.", ""
    # Connecting to a unix socket needs write permission on it (and search on the dirs).
    if not os.access(path, os.R_OK | os.W_OK):
        return _permission(path)
    return "", "", ""


def _permission(path: Path) -> tuple[str, str, str]:
    return (
        PERMISSION,
        f"Permission denied on {path}: the event stream is readable by group busted only.",
        "Add yourself to the group, then log in again: sudo usermod -aG busted $USER",
    )


class StreamClient:
    """Receives the published stream on a thread; the render loop calls :meth:`drain`."""

    def __init__(
        self,
        endpoint: str,
        inbox_size: int = 20_000,
        context: zmq.Context | None = None,
        clock=time.time,
    ) -> None:
        self.endpoint = endpoint
        self.inbox = Inbox(inbox_size)
        self._ctx = context or zmq.Context.instance()
        self._clock = clock
        self._status = ConnectionStatus(endpoint=endpoint)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busted-ui-stream", daemon=True)
        self._last_seq: int | None = None
        self._reported = ""

    # --- render-loop side ----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def drain(self, max_events: int) -> list[Event]:
        return self.inbox.drain(max_events)

    def status(self) -> ConnectionStatus:
        """A snapshot of the connection state (safe to read from the render loop)."""
        with self._lock:
            s = ConnectionStatus(**self._status.__dict__)
        now = self._clock()
        s.received = self.inbox.received
        s.overflow = self.inbox.overflow
        s.last_event = self.inbox.last_put
        s.events_per_s = self.inbox.rate(now)
        if s.state not in PROBLEM_STATES:
            since = s.last_message or s.connected_at
            if since and now - since > STALE_AFTER_S:
                s.state = STALE
                s.message = (
                    f"No data from the daemon for {now - since:.0f} s."
                    if s.last_message
                    else "Connected, but nothing has arrived yet."
                )
                s.hint = "Is `busted monitor` still running? Check with: busted status"
            elif s.last_message:
                s.state = LIVE
        return s

    # --- receiving thread ---------------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._status, k, v)

    def already_reported(self, state: str, message: str) -> None:
        """The caller printed this problem already: do not log it a second time."""
        self._reported = f"{state}:{message}"

    def _report(self, state: str, message: str, hint: str) -> None:
        """Say a problem once on stderr (the window shows it all the time)."""
        key = f"{state}:{message}"
        if state in PROBLEM_STATES and key != self._reported:
            log.warning("%s %s", message, hint)
        self._reported = key

    def _run(self) -> None:
        sock: zmq.Socket | None = None
        inode: tuple[int, int] | None = None
        path = ipc_path(self.endpoint)
        next_check = 0.0
        poller = zmq.Poller()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + RECHECK_S
                    if path is not None:
                        state, message, hint = check_socket(path)
                        if state:
                            if sock is not None:
                                poller.unregister(sock)
                                sock.close(linger=0)
                                sock, inode = None, None
                            self._set(state=state, message=message, hint=hint)
                            self._report(state, message, hint)
                            self._stop.wait(RECHECK_S)
                            continue
                        st = os.stat(path)
                        current = (st.st_dev, st.st_ino)
                        if sock is not None and current != inode:
                            # A new socket file: the daemon restarted. Start afresh.
                            poller.unregister(sock)
                            sock.close(linger=0)
                            sock = None
                        inode = current
                    if sock is None:
                        sock = self._connect()
                        poller.register(sock, zmq.POLLIN)
                        with self._lock:
                            self._status.connected_at = self._clock()
                            if self._status.state not in (LIVE, STALE):
                                self._status.state = CONNECTING
                                self._status.message = f"Connecting to {self.endpoint}…"
                                self._status.hint = ""
                        self._report(CONNECTING, "", "")
                if sock is None:
                    self._stop.wait(0.1)
                    continue
                if poller.poll(100):
                    self._receive(sock)
        finally:
            if sock is not None:
                sock.close(linger=0)

    def _connect(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.setsockopt(zmq.RECONNECT_IVL, 200)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.SUBSCRIBE, b"events")
        sock.setsockopt(zmq.SUBSCRIBE, b"stats")
        sock.connect(self.endpoint)
        return sock

    def _receive(self, sock: zmq.Socket) -> None:
        """Take everything queued now (bounded, so stop and re-checks stay timely)."""
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = self._clock()
            if len(frames) != 2:
                self._bump("decode_errors")
                continue
            topic, body = frames
            if topic == b"events":
                try:
                    events = schema.decode_batch(body)
                except schema.DecodeError:
                    self._bump("decode_errors")
                    continue
                self._track_seq(events)
                self.inbox.put(events, now)
                self._set(state=LIVE, message="", hint="", last_message=now)
            elif topic == b"stats":
                try:
                    stats = msgpack.unpackb(body, raw=False, strict_map_key=False)
                except Exception:  # msgpack raises several unrelated types
                    self._bump("decode_errors")
                    continue
                if isinstance(stats, dict):
                    self._set(state=LIVE, message="", hint="", last_message=now, daemon_stats=stats)
            self._reported = LIVE

    def _bump(self, name: str) -> None:
        with self._lock:
            setattr(self._status, name, getattr(self._status, name) + 1)

    def _track_seq(self, events: list[Event]) -> None:
        missed = 0
        restarts = 0
        last = self._last_seq  # None until the first numbered event
        for event in events:
            seq = event.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                continue
            if last is not None and seq > last + 1:
                missed += seq - last - 1
            elif last is not None and seq < last and (seq <= 64 or seq < last - 100_000):
                restarts += 1  # numbering started again: a new daemon run
                last = seq
                continue
            if last is None or seq > last:
                last = seq
        self._last_seq = last
        if missed or restarts:
            with self._lock:
                self._status.missed += missed
                self._status.daemon_restarts += restarts
