"""Client side of the control protocol: `busted status`, `busted stop`, benchmarks.

Requests ``{"id", "command", "args"}`` go to the supervisor's ROUTER at
``<runtime_dir>/control.sock`` (root-only); replies are ``{"id", "ok", "result" |
"error"}``. Commands: ``status`` (workers, counters) and ``stop`` (orderly shutdown,
the same path Ctrl-C and SIGTERM take).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import zmq

from busted import ipc
from busted.config import Endpoints
from busted.errors import ConnectError, PrivilegeError


def request(runtime_dir: Path, command: str, args: dict[str, Any] | None = None,
            timeout_s: float = 3.0) -> dict[str, Any]:
    """Send one command to the running monitor and return its result."""
    ep = Endpoints(Path(runtime_dir))
    path = ep.control.removeprefix("ipc://")
    if not os.path.exists(path):
        raise ConnectError(
            f"no busted monitor is running with runtime directory {runtime_dir}.",
            "Start one with `sudo busted monitor` (or pass the same --runtime-dir).",
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise PrivilegeError(
            f"permission denied on {path}: the control socket is root-only.",
            "Run the command with sudo.",
        )
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(ep.control)
        req_id = uuid.uuid4().hex[:8]
        sock.send(ipc.pack({"id": req_id, "command": command, "args": args or {}}))
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
