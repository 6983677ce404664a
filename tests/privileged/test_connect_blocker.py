"""Refusing connects to denied destinations (bpf/enforce.bpf.c), with real clients.

Two listeners on addresses of this test's own; one is denied: curl and Python get
EPERM there, the other still answers, and the refused connect is reported with the
caller's pid. Closing the blocker lifts the block (BPF links die with their owner).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest
from polling import wait_for

pytestmark = pytest.mark.privileged

if os.geteuid() != 0:
    pytest.skip("needs root (BPF on the cgroup hierarchy)", allow_module_level=True)

from busted.enforce.connect_blocker import ConnectBlocker  # noqa: E402 - after the root check

DENIED, ALLOWED = "127.77.0.1", "127.77.0.2"


def _listener(addr: str) -> socket.socket:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, 0))
    srv.listen(16)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv


@pytest.fixture
def blocker():
    b = ConnectBlocker()
    b.start()
    yield b
    b.close()


def test_a_denied_destination_gets_eperm_and_others_work(blocker):
    denied, allowed = _listener(DENIED), _listener(ALLOWED)
    try:
        port = denied.getsockname()[1]
        blocker.block(DENIED, port)
        curl = subprocess.run(["curl", "-v", "--max-time", "5", f"http://{DENIED}:{port}/"],
                              capture_output=True, text=True)
        assert curl.returncode == 7, curl.stderr  # couldn't connect
        assert "Operation not permitted" in curl.stderr, curl.stderr  # EPERM, not a refusal
        ok = subprocess.run(["curl", "-sS", "--max-time", "5",
                             f"http://{ALLOWED}:{allowed.getsockname()[1]}/"],
                            capture_output=True, text=True)
        assert ok.returncode == 0 and ok.stdout == "ok", ok.stderr
        with pytest.raises(PermissionError):
            socket.create_connection((DENIED, port), timeout=5)
        events = wait_for(lambda: [e for e in blocker.poll(0.1) if e["dst_ip"] == DENIED] or None,
                          10, "the refused connect to be reported")
        assert events[0]["action"] == "blocked-connect" and events[0]["dst_port"] == port
        assert events[0]["process_name"] == "curl" and events[0]["pid"] != os.getpid()
    finally:
        denied.close()
        allowed.close()


def test_a_whole_host_can_be_denied_and_closing_lifts_it():
    srv = _listener(DENIED)
    port = srv.getsockname()[1]
    b = ConnectBlocker()
    b.start()
    try:
        b.block(DENIED)  # every port
        with pytest.raises(PermissionError):
            socket.create_connection((DENIED, port), timeout=5)
    finally:
        b.close()
    socket.create_connection((DENIED, port), timeout=5).close()  # the block died with it
    srv.close()
