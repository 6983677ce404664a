"""The named messages keep the wire as it was: the same maps, field for field."""

from __future__ import annotations

from busted import messages
from busted.control_server import dispatch


def test_control_messages() -> None:
    assert messages.report(messages.HELLO, {"received": 1}) == {"type": "hello", "received": 1}
    assert messages.fatal("no bcc") == {"type": "fatal", "error": "no bcc"}
    assert messages.stop() == {"type": "stop"}
    assert messages.stats({"produced": 3}) == {"type": "stats", "stats": {"produced": 3}}
    assert messages.request("ab", "status") == {"id": "ab", "command": "status", "args": {}}


def test_feedback_messages() -> None:
    assert messages.verdict(7, 9, capture=False) == {
        "cmd": "verdict", "pid": 7, "conn_id": 9, "capture": False}
    assert messages.verdict(7, 9, hold=False) == {
        "cmd": "verdict", "pid": 7, "conn_id": 9, "hold": False}
    assert messages.release({"hold_id": 5, "pid": 42, "seq": 3}) == {
        "cmd": "release", "hold_id": 5, "pid": 42}
    held = {"held": True, "hold_id": 5, "pid": 42, "seq": 3}
    assert messages.kill(held, {"policy_rule": "r"}) == {
        "cmd": "kill", "hold_id": 5, "pid": 42, "seq": 3, "policy_rule": "r"}
    assert messages.kill({**held, "held": False}, {})["hold_id"] == 0
    assert messages.block([{"text": "x"}]) == {"cmd": "block", "destinations": [{"text": "x"}]}
    assert set(messages.ENFORCER_COMMANDS) == {"release", "kill", "block"}


def test_dispatch_from_the_command_table() -> None:
    table = {"status": lambda args: {"pid": 1}}
    assert dispatch(table, {"id": "a", "command": "status"}) == {
        "id": "a", "ok": True, "result": {"pid": 1}}
    assert dispatch(table, {"id": "b", "command": "nope"}) == {
        "id": "b", "ok": False, "error": "unknown command 'nope'"}
