"""The supervisor's socket: one ROUTER bound twice, and who may say what on it.

- ``control.sock`` (root only): requests from ``busted status`` / ``busted stop``
  (:mod:`busted.control_client` is the client side);
- ``pipe/supervisor.sock``: the workers' control messages (hello, heartbeats, bye,
  fatal), each worker using its role as ZeroMQ identity.

Both arrive on the same socket; a worker message has a ``type``, a request a
``command`` (fields in :mod:`busted.messages`). Requests are answered only when the
sender's kernel credentials say root, whichever endpoint they came through. This
module knows nothing of the workers' lifecycle: the supervisor hands it one callable
for worker messages and a table of command handlers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import zmq

from busted import ipc, messages
from busted.rundir import RuntimeDir

log = logging.getLogger("busted.supervisor")

Message = dict[str, Any]
CommandHandler = Callable[[Message], Message]


def dispatch(commands: Mapping[str, CommandHandler], request: Message) -> Message:
    """Answer one request (from a client, or a signal turned into one) with the
    handler of its command."""
    command = request.get("command")
    handler = commands.get(command) if isinstance(command, str) else None
    if handler is None:
        return messages.refusal(request.get("id"), f"unknown command {command!r}")
    return messages.reply(request.get("id"), handler(request.get("args") or {}))


class ControlSocket:
    """Reads the supervisor's ROUTER and routes each message to its handler."""

    def __init__(self, ctx: zmq.Context, rundir: RuntimeDir,
                 on_worker_message: Callable[[str, Message], None],
                 commands: Mapping[str, CommandHandler]) -> None:
        self.on_worker_message = on_worker_message
        self.commands = commands
        ep = rundir.endpoints
        self.sock = ipc.make_socket(ctx, zmq.ROUTER, hwm=10000, linger_ms=0)
        # A restarted worker reuses its role as identity: let it take over the route.
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # Control first: its peer filter (root only) must not include the worker account.
        rundir.bind(self.sock, ep.control, "control")
        rundir.bind(self.sock, ep.supervisor, "pipe")

    def read(self) -> None:
        """Handle what is queued (a bounded number, so the supervisor's loop goes on)."""
        for _ in range(1000):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            try:
                message = ipc.unpack(frames[-1].bytes)
            except Exception:  # noqa: BLE001 - garbage on the control socket is ignored
                log.warning("ignored a malformed control message")
                continue
            if "type" in message:
                self.on_worker_message(frames[0].bytes.decode(errors="replace"), message)
                continue
            sender = ipc.peer_uid(frames[-1])
            if sender == os.geteuid():
                reply = dispatch(self.commands, message)
            else:  # a worker account, through the pipe endpoint: commands are root's
                log.warning("refused a %r command from uid %s", message.get("command"), sender)
                reply = messages.refusal(message.get("id"), "commands are accepted from root only")
            self.sock.send_multipart([*(f.bytes for f in frames[:-1]), ipc.pack(reply)])

    def poll(self, timeout_ms: int) -> bool:
        return bool(self.sock.poll(timeout_ms))

    def send_to(self, role: str, message: Message) -> None:
        """A message to one worker (it is addressed by its role)."""
        try:
            self.sock.send_multipart([role.encode(), ipc.pack(message)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # not connected (yet); the stop deadline covers it

    def close(self) -> None:
        self.sock.close(linger=0)
