"""Blind spots end to end: a TLS client busted cannot read is reported, a readable one is not.

``gnutls-cli`` (GnuTLS: no probes) sends an HTTP request to api.openai.com (the harness's
fake API, by its real name): the monitor must print a BLIND_SPOT naming the process, its
executable, GnuTLS, the SNI read from the ClientHello, why and what to do; `busted
status` lists it and `busted doctor --coverage` exits 3 (a process talking to an LLM
host is blind). curl (OpenSSL, probed) to the same host gives no BLIND_SPOT, and its
TCP_CLOSE event carries the SNI of its ClientHello (the only source of SNI for
connection events).

A later gnutls-cli run is the sentinel for "no BLIND_SPOT for curl": connections are
judged in the order their requests went out, so once the sentinel's BLIND_SPOT is
printed, curl's connection (closed before the sentinel started) has been judged too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid

import pytest

from .harness.events import summarize
from .harness.pki import OPENAI_HOST

pytestmark = pytest.mark.privileged

TIMEOUT = 30.0
OPENAI_CHAT = f"https://{OPENAI_HOST}/v1/chat/completions"


def _request(marker: str) -> bytes:
    """An HTTP request of ~2 KB: well beyond the hello, so it counts as a request. The
    connection stays open (keep-alive) so the client is still connected while status
    and doctor look at it."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": f"{marker} " + "x" * 2000}]})
    head = (f"POST /v1/chat/completions HTTP/1.1\nHost: {OPENAI_HOST}\n"
            f"Content-Type: application/json\nContent-Length: {len(body)}\n\n")
    return (head + body).encode()


class GnutlsClient:
    """gnutls-cli in the client namespace, kept open until closed (so its process is
    alive while status and doctor look at it)."""

    def __init__(self, namespace, tls_server) -> None:
        if shutil.which("gnutls-cli") is None:
            pytest.fail("gnutls-cli is missing: apt-get install -y gnutls-bin "
                        "(deploy/setup-host.sh)")
        self.marker = f"blind-{uuid.uuid4().hex[:12]}"
        argv = ["gnutls-cli", "--crlf", f"--x509cafile={namespace.ca_pem}", OPENAI_HOST]
        self.proc = namespace.popen(argv, stdin=subprocess.PIPE)
        self.pid = self.proc.pid
        self.proc.stdin.write(_request(self.marker))
        self.proc.stdin.flush()
        # the request really left through GnuTLS: the server got it
        tls_server.wait_for_request(lambda r: self.marker.encode() in r.body, timeout=TIMEOUT)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture
def gnutls(namespace, tls_server):
    clients: list[GnutlsClient] = []

    def start() -> GnutlsClient:
        client = GnutlsClient(namespace, tls_server)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()


def _blind_spot(monitor, pid: int):
    return monitor.events.wait_for(
        lambda e: e.get("event_type") == "BLIND_SPOT" and e.get("pid") == pid,
        TIMEOUT, f"a BLIND_SPOT event for pid {pid}", pid)


def _busted(monitor, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([monitor.busted, *args, "--runtime-dir", str(monitor.runtime_dir)],
                          capture_output=True, text=True, timeout=60)


def _listed_blind(monitor, pid: int) -> list[dict]:
    """`busted status --json`'s blind entries for ``pid``, polled until there (capture
    reports its table with its heartbeat, about once a second)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        status = _busted(monitor, "status", "--json")
        assert status.returncode == 0, status.stderr
        blind = [e for e in json.loads(status.stdout).get("blind", []) if e.get("pid") == pid]
        if blind or time.monotonic() > deadline:
            assert blind, f"busted status does not list pid {pid} as blind:\n{status.stdout[-3000:]}"
            return blind
        time.sleep(0.5)


def test_gnutls_client_is_reported_blind(monitor, gnutls, loopback_addr):
    client = gnutls()
    event = _blind_spot(monitor, client.pid)
    where = summarize(event)
    assert event.get("process_name") == "gnutls-cli", where
    assert event.get("sni") == OPENAI_HOST, where
    assert event.get("dst_ip") == loopback_addr and event.get("dst_port") == 443, where
    assert event.get("tls_library") == "GnuTLS", where
    assert str(event.get("exe", "")).endswith("/gnutls-cli"), where
    assert "GnuTLS" in event.get("blind_reason", ""), where
    assert event.get("blind_advice"), where
    assert event.get("provider") == "OpenAI", where

    blind = _listed_blind(monitor, client.pid)
    assert blind[0]["tls_library"] == "GnuTLS" and blind[0]["destination"] == OPENAI_HOST
    text = _busted(monitor, "status")
    assert "gnutls-cli" in text.stdout and "GnuTLS" in text.stdout, text.stdout[-3000:]

    doctor = _busted(monitor, "doctor", "--coverage", "--json")
    assert doctor.returncode == 3, f"doctor --coverage exited {doctor.returncode}:\n" \
        f"{doctor.stdout[-3000:]}\n{doctor.stderr[-2000:]}"
    rows = [r for r in json.loads(doctor.stdout)["processes"] if r["pid"] == client.pid]
    assert rows, f"doctor --coverage does not list pid {client.pid}:\n{doctor.stdout[-3000:]}"
    assert rows[0]["blind"] and rows[0]["llm"] and rows[0]["tls_library"] == "GnuTLS", rows[0]
    assert OPENAI_HOST in rows[0]["destinations"], rows[0]
    human = _busted(monitor, "doctor", "--coverage")
    assert human.returncode == 3 and "gnutls-cli" in human.stdout, human.stdout[-3000:]


def test_curl_is_not_blind_and_carries_the_hello_sni(monitor, clients, gnutls, body_dir,
                                                     loopback_addr):
    marker = f"not-blind-{uuid.uuid4().hex[:12]}"
    body = json.dumps({"model": "gpt-4o", "messages": [
        {"role": "user", "content": f"{marker} " + "y" * 2000}]}).encode()
    curl = clients.curl(OPENAI_CHAT, body, body_dir=body_dir,
                        headers=("Content-Type: application/json",))
    closed = monitor.events.wait_for(
        lambda e: e.get("event_type") == "TCP_CLOSE" and e.get("pid") == curl.pid
        and e.get("dst_port") == 443, TIMEOUT, f"curl's TCP_CLOSE (pid {curl.pid})", curl.pid)
    assert closed.get("sni") == OPENAI_HOST, summarize(closed)
    sentinel = gnutls()
    _blind_spot(monitor, sentinel.pid)
    wrong = [summarize(e) for e in monitor.events.for_pid(curl.pid)
             if e.get("event_type") == "BLIND_SPOT"]
    assert not wrong, f"curl, whose plaintext busted reads, was reported blind: {wrong}"
