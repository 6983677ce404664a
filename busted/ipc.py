"""ZeroMQ plumbing shared by the supervisor and the workers.

- :func:`make_socket`: one place that sets high-water marks and linger.
- :class:`BatchSender`: collects events into batches (flushed at ``BATCH_SIZE`` or after
  ``FLUSH_INTERVAL_S``) and hands them over without blocking the caller for longer than
  it allows; what cannot be handed over is counted as dropped, never silently lost.
- :class:`PubSender`: the output stage's published stream, with the same interface.
- :func:`pack` / :func:`unpack`: msgpack for small control and heartbeat messages.
- :func:`bind_restricted` / :func:`peer_uid`: who may connect to an ipc socket, checked
  on the socket file's mode and owner and again on the peer's kernel credentials.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgpack
import zmq

from busted import schema
from busted.config import BATCH_SIZE, FLUSH_INTERVAL_S, HWM_MESSAGES


def pack(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def unpack(frame: bytes) -> dict[str, Any]:
    message = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    if not isinstance(message, dict):
        raise ValueError("control message is not a map")
    return message


def make_socket(ctx: zmq.Context, kind: int, *, hwm: int = HWM_MESSAGES,
                linger_ms: int = 1000) -> zmq.Socket:
    """A socket with bounded queues. Linger lets queued batches leave at shutdown
    without ever hanging it."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, linger_ms)
    return sock


def bind_restricted(sock: zmq.Socket, endpoint: str, *, mode: int,
                    allow_uids: tuple[int, ...] = (), allow_gids: tuple[int, ...] = (),
                    uid: int = -1, gid: int = -1) -> None:
    """Bind an ``ipc://`` endpoint that only the given users and groups may use.

    Two locks, so that one mistake is not enough: the socket file gets ``mode`` (set
    through the umask while binding: no chmod that a swapped path could redirect) and
    owner ``uid``/``gid`` (without following symlinks); and libzmq checks each
    connecting process's credentials (``SO_PEERCRED``) against ``allow_uids`` /
    ``allow_gids`` (the process's group or its membership in /etc/group) and drops
    anyone else at once, whatever the file's mode. libzmq copies the filters into each
    bind: filters set for a later bind do not widen an earlier one.
    """
    for allowed in allow_uids:
        sock.setsockopt(zmq.IPC_FILTER_UID, allowed)
    for allowed in allow_gids:
        sock.setsockopt(zmq.IPC_FILTER_GID, allowed)
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(endpoint)
    finally:
        os.umask(old_umask)
    if uid != -1 or gid != -1:
        os.chown(endpoint.removeprefix("ipc://"), uid, gid, follow_symlinks=False)


def peer_uid(frame: zmq.Frame) -> int | None:
    """The uid of the process that sent ``frame`` over ipc, or None when unknown.

    libzmq reads the connection's ``SO_PEERCRED`` and reports it in the frame's
    ``Peer-Address`` property as ``<address>:<uid>:<gid>:<pid>``.
    """
    try:
        address = frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError):
        return None
    parts = str(address).rsplit(":", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return int(parts[1])


class BatchSender:
    """Batches events onto a PUSH socket, never blocking longer than ``wait_ms``.

    Capture uses ``wait_ms=0``: a slow or dead downstream costs it a counted drop, not
    a stall. Middle stages may wait a little, which pushes back up to capture, where
    the drop is counted.
    """

    def __init__(self, sock: zmq.Socket, *, wait_ms: int = 0,
                 batch_size: int = BATCH_SIZE, flush_interval_s: float = FLUSH_INTERVAL_S,
                 clock=time.monotonic) -> None:
        self.sock = sock
        self.wait_ms = wait_ms
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.pending: list[dict[str, Any]] = []
        self.first_pending_at = 0.0
        self.sent = 0
        self.dropped = 0
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLOUT)

    def add(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        restart_timer = not self.pending
        self.pending.extend(events)
        while len(self.pending) >= self.batch_size:
            batch = self.pending[: self.batch_size]
            del self.pending[: self.batch_size]
            self._send(schema.encode_batch(batch), len(batch))
            restart_timer = True
        if self.pending and restart_timer:
            # The flush deadline counts from the oldest event still waiting.
            self.first_pending_at = self.clock()
        if self.pending and any(e.get("held") for e in events):
            # A process is stopped until this event's verdict: no batching delay.
            self.flush()

    def send_frame(self, frame: bytes, count: int) -> None:
        """Forward an already-encoded batch as is (pass-through stages)."""
        self.flush()
        self._send(frame, count)

    def due_in(self) -> float | None:
        """Seconds until the pending partial batch must go, or None if nothing waits."""
        if not self.pending:
            return None
        return max(0.0, self.first_pending_at + self.flush_interval_s - self.clock())

    def flush_if_due(self) -> None:
        due = self.due_in()
        if due is not None and due <= 0:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            self._send(schema.encode_batch(batch), len(batch))

    def _send(self, frame: bytes, count: int) -> None:
        try:
            self.sock.send(frame, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            if not self.wait_ms or not self._poller.poll(self.wait_ms):
                self.dropped += count
                return
            try:
                self.sock.send(frame, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.dropped += count
                return
        self.sent += count


class PubSender:
    """The output stage's 'next hop': the published stream. PUB never blocks; a slow
    subscriber loses messages at its own high-water mark without slowing us, and can
    tell from the ``seq`` gaps."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.sent = 0
        self.dropped = 0

    def send_frame(self, frame: bytes, count: int) -> None:
        self.sock.send_multipart([b"events", frame], zmq.NOBLOCK, copy=False)
        self.sent += count

    def add(self, events: list[dict[str, Any]]) -> None:
        if events:
            self.send_frame(schema.encode_batch(events), len(events))

    def publish_stats(self, stats: dict[str, Any]) -> None:
        self.sock.send_multipart([b"stats", pack(stats)], zmq.NOBLOCK)

    def due_in(self) -> None:
        return None

    def flush_if_due(self) -> None:
        pass

    def flush(self) -> None:
        pass
