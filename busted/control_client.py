"""Client side of the control protocol: `busted status`, `busted stop`, benchmarks.

Requests ``{"id", "command", "args"}`` go to the supervisor's ROUTER at
``<runtime_dir>/control.sock`` (root-only: its mode, and the supervisor checks each
peer's credentials); replies are ``{"id", "ok", "result" |
"error"}``. Commands: ``status`` (workers, counters) and ``stop`` (orderly shutdown,
the same path Ctrl-C and SIGTERM take).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import zmq

from busted import ipc, messages
from busted.config import Endpoints
from busted.errors import ConnectError, PrivilegeError


def request(runtime_dir: Path, command: str, args: dict[str, Any] | None = None,
            timeout_s: float = 3.0) -> dict[str, Any]:
    """Send one command to the running monitor and return its result."""
    ep = Endpoints(Path(runtime_dir))
    path = ep.control.removeprefix("ipc://")
    try:
        owner = os.stat(path).st_uid
    except FileNotFoundError:
        raise ConnectError(
            f"no busted monitor is running with runtime directory {runtime_dir}.",
            "Start one with `sudo busted monitor` (or pass the same --runtime-dir).",
        ) from None
    except PermissionError:
        owner = 0  # the runtime directory is closed to us
    # The monitor drops any other user's connection (it checks the peer's credentials),
    # which a client would only see as silence: say it here instead.
    if os.geteuid() not in (0, owner) or not os.access(path, os.R_OK | os.W_OK):
        raise PrivilegeError(
            f"permission denied on {path}: the monitor takes commands only from "
            f"{'root' if owner == 0 else f'uid {owner}'}.",
            "Run the command with sudo.",
        )
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(ep.control)
        req_id = uuid.uuid4().hex[:8]
        sock.send(ipc.pack(messages.request(req_id, command, args)))
        if not sock.poll(int(timeout_s * 1000)):
            raise ConnectError(
                f"the monitor did not answer within {timeout_s:.0f} s "
                f"(runtime directory {runtime_dir}).",
                "It may be stuck or gone; check `ps -C busted` and its logs.",
            )
        reply = ipc.unpack(sock.recv())
    finally:
        sock.close()
    if not reply.get("ok"):
        raise ConnectError(f"the monitor refused {command!r}: {reply.get('error')}")
    return reply.get("result") or {}
