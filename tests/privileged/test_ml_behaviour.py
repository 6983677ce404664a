"""Behavioural verdicts end to end: a client whose TLS busted does not read (wget, built
on GnuTLS) streams an SSE answer with token timing from a local TLS server; the monitor's
TCP_EXCHANGE event for that connection carries ml_class "llm_stream" with a confidence,
and no plaintext of it. A bulk download and a REST loop through the same client do not
get "llm_stream". The server's timing is clearly stream-like (30 tokens/s for ~3 s after
a 0.6 s first-token delay); the assertions are on classes, not on confidences.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from busted.bench.tls_workload import make_certificates
from busted.ml.server import StreamServer

pytestmark = pytest.mark.privileged

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if shutil.which("wget") is None:
        pytest.fail("wget is missing: apt-get install -y wget")
    if "libgnutls" not in subprocess.run(["ldd", shutil.which("wget")], capture_output=True,
                                         text=True).stdout:
        pytest.fail("this wget is not built on GnuTLS: the test needs a client busted does not read")
    pki = tmp_path_factory.mktemp("ml-pki")
    ca, cert, key = make_certificates(pki, host="localhost", also="IP:127.0.0.1")
    with StreamServer(cert, key) as srv:
        srv.ca = ca
        yield srv


def wget(server, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["wget", "-q", "-O", "/dev/null", f"--ca-certificate={server.ca}", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def verdicts(monitor, proc: subprocess.Popen, answers: int = 1, answer_bytes: int = 1000) -> list[dict]:
    """The judged exchanges of the client's connections, once ``answers`` of them brought
    ``answer_bytes`` or more (the answers; a handshake's leftovers make smaller ones)."""
    assert proc.wait(TIMEOUT) == 0, proc.stderr.read()

    def judged(events: list[dict]) -> list[dict] | None:
        found = [e for e in events if e.get("event_type") == "TCP_EXCHANGE" and e.get("ml_class")]
        big = [e for e in found if e["exchange"]["rx_bytes"] >= answer_bytes]
        return found if len(big) >= answers else None

    return monitor.events.wait_until(judged, timeout=TIMEOUT, pid=proc.pid,
                                     what=f"{answers} judged TCP_EXCHANGE answer(s)")


def test_a_blind_sse_stream_is_recognised(monitor, server):
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "a haiku about eBPF"}]})
    proc = wget(server, "--header=content-type: application/json", "--header=x-busted-rate: 30",
                "--header=x-busted-ttfb: 0.6", "--header=x-busted-tokens: 90",
                "--header=x-busted-seed: 4", f"--post-data={body}",
                f"https://127.0.0.1:{server.port}/v1/chat/completions")
    # the answer's exchange; GnuTLS may read the server's session tickets between the
    # request's head and body, which makes a small exchange of its own first
    event = max(verdicts(monitor, proc, answer_bytes=5000), key=lambda e: e["exchange"]["rx_bytes"])
    assert event["ml_class"] == "llm_stream", event
    assert 0.5 < event["ml_confidence"] <= 1.0
    assert event["ml_note"].startswith("behaves like an LLM stream (")
    assert not event.get("plaintext_conn_id"), "busted was not supposed to read wget's TLS"
    assert event["exchange"]["rx_bursts"] >= 30


def test_a_bulk_download_is_not_a_stream(monitor, server):
    proc = wget(server, f"https://127.0.0.1:{server.port}/blob/8000000")
    events = verdicts(monitor, proc, answer_bytes=8_000_000)
    assert all(e["ml_class"] != "llm_stream" for e in events), events


def test_a_rest_loop_is_not_a_stream(monitor, server):
    urls = [f"https://127.0.0.1:{server.port}/api/items/{n}" for n in range(100, 110)]
    proc = wget(server, *urls)  # one keep-alive connection, ten request/response exchanges
    events = verdicts(monitor, proc, answers=10, answer_bytes=100)
    assert all(e["ml_class"] != "llm_stream" for e in events), [
        (e["ml_class"], e["ml_confidence"]) for e in events]


def test_a_blind_spot_says_what_the_connection_behaves_like(monitor, server):
    """gnutls-cli (GnuTLS: not read) with SNI api.openai.com sends a request and reads a
    streamed answer: the BLIND_SPOT for its connection comes (again, once the exchange is
    judged) with the model's verdict, "behaves like an LLM stream (...)"."""
    if shutil.which("gnutls-cli") is None:
        pytest.fail("gnutls-cli is missing: apt-get install -y gnutls-bin")
    # more than the blind-spot rule's 512 bytes after the hello: a request went out
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [
        {"role": "user", "content": "a haiku about eBPF " + "and uprobes " * 80}]})
    request = ("POST /v1/chat/completions HTTP/1.1\r\nhost: api.openai.com\r\n"
               "content-type: application/json\r\nx-busted-rate: 30\r\nx-busted-ttfb: 0.6\r\n"
               "x-busted-tokens: 90\r\nx-busted-seed: 5\r\n"
               f"content-length: {len(body)}\r\n\r\n{body}")
    proc = subprocess.Popen(
        ["gnutls-cli", f"--x509cafile={server.ca}", "--verify-hostname=localhost",
         "--sni-hostname=api.openai.com", "-p", str(server.port), "127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        proc.stdin.write(request.encode())
        proc.stdin.flush()
        answer = b""
        # the whole answer (the server ends it within seconds), then close: the
        # exchange ends and is judged
        while b"[DONE]" not in answer:
            line = proc.stdout.readline()
            assert line, f"gnutls-cli ended before the answer did: {answer[-500:]!r}"
            answer += line
        proc.stdin.close()
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()

    def stream_blind_spot(events: list[dict]) -> dict | None:
        return next((e for e in events if e.get("event_type") == "BLIND_SPOT"
                     and e.get("ml_class") == "llm_stream"), None)

    event = monitor.events.wait_until(stream_blind_spot, timeout=TIMEOUT, pid=proc.pid,
                                      what="a BLIND_SPOT saying the connection behaves like an LLM stream")
    assert event.get("sni") == "api.openai.com", event
    assert event["ml_note"].startswith("behaves like an LLM stream ("), event
