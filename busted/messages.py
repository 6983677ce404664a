"""Every message busted's processes send each other, defined once with its fields.

The wire is a msgpack map (:func:`busted.ipc.pack`); these functions only build the
maps, so a field has one spelling and a reader can find every sender by name.

**Control** (worker <-> supervisor, DEALER/ROUTER on ``pipe/supervisor.sock``; the
worker's ZeroMQ identity is its role). Key ``type``:

- ``hello`` / ``heartbeat`` / ``bye``: a worker's counters (:func:`report`) when it is
  ready, every 0.5 s, and once more when it stops (everything it had is downstream);
  capture adds ``next_seq`` and ``exhausted``. Every message carries the sender's ``pid``.
- ``fatal``: ``{"error"}``, the worker cannot run (its set-up failed); the monitor stops.
- ``stop`` (supervisor -> worker): drain and exit.
- ``stats`` (supervisor -> output): ``{"stats"}``, the counters to publish on the stream.

**Requests** (``busted status`` / ``busted stop`` -> supervisor, on ``control.sock``):
``{"id", "command", "args"}``, answered by ``{"id", "ok", "result" | "error"}``.

**Feedback** (policy / classify -> capture, PUSH/PULL on ``pipe/feedback.sock``). Key
``cmd``:

- ``verdict``: ``{"pid", "conn_id"}`` and ``"capture": False`` (stop copying this
  connection: not LLM traffic) or ``"hold": False`` (never hold its writes: a server);
  applied by the kernel source to its ``verdicts`` map.
- ``release``: ``{"hold_id", "pid"}``, resume the writer of a held event.
- ``kill``: ``{"hold_id", "pid", "seq"}`` plus the denied event's context, kill the
  writer of a denied event (``hold_id`` 0 when it was not held).
- ``block``: ``{"destinations"}``, the policy's resolved ``block_destinations``.
  ``release``, ``kill`` and ``block`` go to the enforcer (:data:`ENFORCER_COMMANDS`).
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]

# --- control ---------------------------------------------------------------------------
HELLO = "hello"
HEARTBEAT = "heartbeat"
BYE = "bye"
FATAL = "fatal"
STOP = "stop"
STATS = "stats"


def report(kind: str, counters: Message) -> Message:
    """A worker's counters as ``hello``, ``heartbeat`` or ``bye``."""
    return {"type": kind, **counters}


def fatal(error: str) -> Message:
    return {"type": FATAL, "error": error}


def stop() -> Message:
    return {"type": STOP}


def stats(counters: Message) -> Message:
    return {"type": STATS, "stats": counters}


# --- requests on control.sock ------------------------------------------------------------
def request(request_id: str, command: str, args: Message | None = None) -> Message:
    return {"id": request_id, "command": command, "args": args or {}}


def reply(request_id: Any, result: Message) -> Message:
    return {"id": request_id, "ok": True, "result": result}


def refusal(request_id: Any, error: str) -> Message:
    return {"id": request_id, "ok": False, "error": error}


# --- feedback ------------------------------------------------------------------------
VERDICT = "verdict"
RELEASE = "release"
KILL = "kill"
BLOCK = "block"
ENFORCER_COMMANDS = (RELEASE, KILL, BLOCK)


def verdict(pid: int, conn_id: int, *, capture: bool = True, hold: bool = True) -> Message:
    """What the kernel should do with a connection from now on (only the settings
    that differ from the default are sent)."""
    message: Message = {"cmd": VERDICT, "pid": pid, "conn_id": conn_id}
    if not capture:
        message["capture"] = False
    if not hold:
        message["hold"] = False
    return message


def release(event: Message) -> Message:
    """Resume the writer of a held event."""
    return {"cmd": RELEASE, "hold_id": event.get("hold_id", 0), "pid": event.get("pid", 0)}


def kill(event: Message, context: Message) -> Message:
    """Kill the writer of a denied event; ``context`` (the event's destination and
    rule) goes into the enforcement event capture reports."""
    return {"cmd": KILL, "hold_id": event.get("hold_id", 0) if event.get("held") else 0,
            "pid": event.get("pid", 0), "seq": event.get("seq"), **context}


def block(destinations: list[Any]) -> Message:
    return {"cmd": BLOCK, "destinations": destinations}
