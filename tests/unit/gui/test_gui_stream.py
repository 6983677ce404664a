"""The dashboard's stream client against a real PUB socket in a temp dir, and its
diagnosis of a missing daemon or a socket it may not open."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from polling import wait_for

from busted import schema
from busted_gui import stream
from busted_gui.detail import masked_headers, sections
from busted_gui.hooks import TestHooks
from busted_gui.stream import Inbox, StreamClient, check_socket


@pytest.fixture
def rundir():
    # ipc paths are limited to ~107 bytes: keep it short.
    with tempfile.TemporaryDirectory(prefix="bui", dir="/tmp") as d:
        yield Path(d)


class Publisher:
    """Plays the output worker: binds events.sock and publishes batches and stats."""

    def __init__(self, path: Path) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"ipc://{path}")

    def events(self, events) -> None:
        self.sock.send_multipart([b"events", schema.encode_batch(events)])

    def stats(self, **stats) -> None:
        self.sock.send_multipart([b"stats", msgpack.packb({"time": time.time(), **stats})])

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def test_receives_events_and_stats_and_counts_seq_gaps(rundir):
    path = rundir / "events.sock"
    pub = Publisher(path)
    client = StreamClient(f"ipc://{path}")
    client.start()
    try:
        received: list[dict] = []

        def got(n):
            # A SUB socket misses what is published before its subscription lands:
            # publish until the client sees the first batch, like the real daemon does.
            if not received:
                pub.events([{"seq": 1, "llm_provider": "OpenAI"}])
            received.extend(client.drain(1000))
            return len(received) >= n

        wait_for(lambda: got(1), what="first batch")
        first = received[-1]["seq"]
        base = first + 1
        expected = len(received) + 3
        pub.events([{"seq": base}, {"seq": base + 1}, {"seq": base + 5}])  # 3 missed
        pub.stats(dropped=7, lost=2, produced=100, workers={})
        wait_for(lambda: got(expected), what="the second batch")
        assert [e["seq"] for e in received[-3:]] == [base, base + 1, base + 5]
        status = wait_for(lambda: (s := client.status()).daemon_stats and s, what="stats")
        assert status.state == stream.LIVE
        assert status.daemon_stats["dropped"] == 7
        assert status.missed >= 3
        assert status.received >= 4
        assert status.decode_errors == 0
        pub.sock.send_multipart([b"events", b"\xc1garbage"])
        wait_for(lambda: client.status().decode_errors == 1, what="decode error counted")
    finally:
        client.stop()
        pub.close()


def test_no_daemon_then_daemon_starts_then_restarts(rundir):
    path = rundir / "events.sock"
    client = StreamClient(f"ipc://{path}")
    client.start()
    pub = None
    try:
        status = wait_for(lambda: (s := client.status()).state == stream.NO_DAEMON and s,
                          what="no-daemon state")
        assert "sudo busted monitor" in status.hint
        assert str(rundir) in status.hint  # not the default dir: the hint names it

        pub = Publisher(path)

        def live_after_publishing():
            pub.events([{"seq": 1}])
            return client.status().state == stream.LIVE

        wait_for(live_after_publishing, what="live once the daemon is there")

        # The daemon goes away (socket file removed) and comes back with a new socket.
        pub.close()
        path.unlink()
        wait_for(lambda: client.status().state == stream.NO_DAEMON, what="no-daemon again")
        pub = Publisher(path)
        before = client.status().received
        wait_for(lambda: (pub.events([{"seq": 1}]), client.status().received > before)[1],
                 what="events after the restart")
    finally:
        client.stop()
        if pub is not None:
            pub.close()


def test_stale_when_the_daemon_is_silent(rundir, monkeypatch):
    monkeypatch.setattr(stream, "STALE_AFTER_S", 0.3)
    path = rundir / "events.sock"
    pub = Publisher(path)
    client = StreamClient(f"ipc://{path}")
    client.start()
    try:
        wait_for(lambda: (pub.stats(dropped=0), client.status().state == stream.LIVE)[1],
                 what="live")
        status = wait_for(lambda: (s := client.status()).state == stream.STALE and s,
                          what="stale")
        assert "No data" in status.message
    finally:
        client.stop()
        pub.close()


def _check_as_nobody(path: Path) -> str:
    """check_socket() run by an unprivileged user (root may open anything)."""
    if os.geteuid() != 0:
        return check_socket(path)[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, check_socket(path)[0].encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        result = f.read()
    os.waitpid(pid, 0)
    return result


def test_check_socket_permission_denied_for_a_user_outside_the_group(rundir):
    rundir.chmod(0o755)
    path = rundir / "events.sock"
    pub = Publisher(path)
    try:
        os.chmod(path, 0o660)  # like the daemon: group busted only
        assert _check_as_nobody(path) == stream.PERMISSION
        # A directory the user may not enter hides the socket: still "permission".
        inner = rundir / "run"
        inner.mkdir(mode=0o750)
        (inner / "events.sock").touch()
        assert _check_as_nobody(inner / "events.sock") == stream.PERMISSION
    finally:
        pub.close()


def test_check_socket_states(rundir):
    assert check_socket(rundir / "missing.sock")[0] == stream.NO_DAEMON
    assert check_socket(rundir / "nodir" / "events.sock")[0] == stream.NO_DAEMON
    pub = Publisher(rundir / "events.sock")
    try:
        assert check_socket(rundir / "events.sock") == ("", "", "")
    finally:
        pub.close()


def test_inbox_is_bounded_and_counts_overflow():
    inbox = Inbox(maxlen=10)
    inbox.put([{"seq": i} for i in range(8)])
    inbox.put([{"seq": i} for i in range(8, 15)])
    assert inbox.overflow == 5
    assert inbox.received == 15
    assert [e["seq"] for e in inbox.drain(3)] == [5, 6, 7]
    assert len(inbox.drain(100)) == 7
    assert inbox.drain(100) == []


def test_detail_masks_secrets_even_if_the_daemon_did_not():
    headers = masked_headers({
        "Authorization": "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz",
        "x-api-key": "sk-ant-api03-abcdefghijklmnop",
        "user-agent": "curl/8 sk-abcdefghijklmnopqrstu",
        "content-type": "application/json",
    })
    text = repr(headers)
    assert "abcdefghijklmnopqrstuvwxyz" not in text
    assert "api03-abcdefgh" not in text
    assert "sk-abcdefghijklmnopqrstu" not in text
    assert ("content-type", "application/json") in headers
    prompt = sections({"llm_user_message": "fix it: AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG"
                                           " and sk-proj-abcdefghijklmnopqrstuvwx please"})
    text = next(s.text for s in prompt if s.title == "User message")
    assert "K7MDENG" not in text and "abcdefghijklmnop" not in text
    assert text.startswith("fix it: AWS_SECRET_ACCESS_KEY=wJal") and text.endswith("please")
    names = [s.title for s in sections({
        "policy": "deny", "policy_reasons": ["pii: ssn"], "mcp_method": "tools/call",
        "mcp_tool": "run_shell", "llm_system_prompt": "You are", "llm_user_message": "hi",
        "llm_response_preview": "hello", "http_headers": {"authorization": "Bearer x"},
        "process_name": "python3", "pid": 1, "identity_instance": "python3-1-openai",
    })]
    assert names[:2] == ["Policy", "MCP"]
    for title in ("System prompt", "User message", "Response preview", "Process", "Identity",
                  "Headers (secrets masked)"):
        assert title in names


def test_hooks_run_each_command_once_and_report_it(tmp_path):
    hooks = TestHooks(tmp_path)
    seen = []
    (tmp_path / "commands.jsonl").write_text('{"cmd": "a"}\n{"cmd": "b"}\n{"cmd": "c"')
    hooks.poll(lambda: {"x": 1}, seen.append, now=1.0)
    assert [c["cmd"] for c in seen] == ["a", "b"]
    with open(tmp_path / "commands.jsonl", "a") as f:
        f.write('}\nnot json\n')
    hooks.poll(lambda: {"x": 2}, seen.append, now=2.0)
    assert [c["cmd"] for c in seen] == ["a", "b", "c"]
    import json

    state = json.loads((tmp_path / "state.json").read_text())
    assert state == {"x": 2, "commands_done": 4}
