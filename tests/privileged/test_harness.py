"""The end-to-end harness on its own, without the monitor.

If one of these fails, the e2e capture tests that use the same piece cannot say anything
about the monitor: fix the harness (or the host set-up) first. Each test checks what the
client got back against what the server recorded it received.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from .harness.clients import API_KEY
from .harness.pki import ANTHROPIC_HOST, BORING_HOST, HOSTS, OPENAI_HOST

pytestmark = pytest.mark.privileged

OPENAI_CHAT = f"https://{OPENAI_HOST}/v1/chat/completions"


def _chat_body(prompt: str, stream: bool = False) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


def test_certificates_verify_against_the_test_ca(pki):
    for host in HOSTS:
        cert, _ = pki.certs[host]
        result = subprocess.run(["openssl", "verify", "-CAfile", str(pki.ca_pem), "-verify_hostname",
                                 host, str(cert)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_namespace_resolves_providers_to_the_test_server_only_inside(namespace, clients):
    res = clients.run(["getent", "hosts", OPENAI_HOST, ANTHROPIC_HOST])
    assert res.stdout.split()[0] == namespace.address
    outside = subprocess.run(["getent", "hosts", OPENAI_HOST], capture_output=True, text=True)
    assert namespace.address not in outside.stdout, "the hosts bind mount leaked out of the namespace"


def test_python_ssl_client_split_writes_arrive_whole(tls_server, clients, body_dir):
    body = _chat_body("harness raw split " + "x" * 3000)
    res = clients.raw(OPENAI_CHAT, body, split=4, body_dir=body_dir,
                      headers=("Content-Type: application/json", f"Authorization: Bearer {API_KEY}"))
    got = tls_server.wait_for_request(lambda r: r.body == body)
    assert got.sni == OPENAI_HOST
    assert got.headers["host"] == OPENAI_HOST
    assert got.answer in res.answer()
    assert res.comm.startswith("python")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_openai_sdk_gets_the_fake_answer(tls_server, clients, stream):
    prompt = f"harness openai sdk stream={stream}"
    res = clients.openai(prompt, stream=stream)
    got = tls_server.wait_for_request(lambda r: prompt.encode() in r.body)
    assert got.path == "/v1/chat/completions"
    assert got.sni == OPENAI_HOST
    assert got.headers["authorization"] == f"Bearer {API_KEY}"
    assert got.answer in res.answer()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_sdk_gets_the_fake_answer(tls_server, clients, stream):
    prompt = f"harness anthropic sdk stream={stream}"
    res = clients.anthropic(prompt, stream=stream)
    got = tls_server.wait_for_request(lambda r: prompt.encode() in r.body)
    assert got.path == "/v1/messages"
    assert got.sni == ANTHROPIC_HOST
    # anthropic 2.x sends the key as a bearer token; older versions as x-api-key.
    assert API_KEY in (got.headers.get("x-api-key"), got.headers.get("authorization", "")[7:])
    assert got.answer in res.answer()


def test_httpx_client(tls_server, clients, body_dir):
    body = _chat_body("harness httpx")
    res = clients.httpx(OPENAI_CHAT, body, body_dir=body_dir,
                        headers=("Content-Type: application/json",))
    got = tls_server.wait_for_request(lambda r: r.body == body)
    assert got.answer in res.answer()


def test_curl_client(tls_server, clients, body_dir):
    body = _chat_body("harness curl")
    res = clients.curl(OPENAI_CHAT, body, body_dir=body_dir,
                       headers=("Content-Type: application/json",))
    got = tls_server.wait_for_request(lambda r: r.body == body)
    assert got.sni == OPENAI_HOST
    assert got.answer in res.answer()


def test_node_client_in_pieces(tls_server, clients, body_dir):
    body = _chat_body("harness node " + "y" * 5000)
    res = clients.node(OPENAI_CHAT, body, pieces=3, body_dir=body_dir,
                       headers=("Content-Type: application/json",))
    got = tls_server.wait_for_request(lambda r: r.body == body)
    assert got.sni == OPENAI_HOST
    assert got.answer in res.answer()
    assert res.comm == "node"


def test_download_from_the_boring_host(tls_server, clients):
    size = 1 << 20
    res = clients.download(f"https://{BORING_HOST}/download?bytes={size}&chunk=65536")
    assert res.result["bytes"] == size
    got = tls_server.wait_for_request(lambda r: r.path.startswith("/download"))
    assert got.sni == BORING_HOST


def test_dns_responder(dns_server, clients, loopback_addr):
    res = clients.dns(OPENAI_HOST, server=loopback_addr)
    assert res.result["addrs"] == [loopback_addr]
    assert any(q.name == OPENAI_HOST for q in dns_server.questions)
    nx = clients.dns("nothing.example.invalid", server=loopback_addr, check=False)
    assert nx.result["status"] == 3  # NXDOMAIN


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_fake_ollama(ollama_server, clients, loopback_addr, path):
    prompt = f"harness ollama {path}"
    res = clients.ollama(f"http://{loopback_addr}:11434{path}", prompt)
    got = ollama_server.wait_for_request(lambda r: prompt.encode() in r.body)
    assert got.answer in res.answer()


def test_keep_alive_repeats_and_large_answers(tls_server, clients, body_dir):
    """What the verdict test relies on: many responses on one connection, big answers."""
    part = 64 << 10
    res = clients.raw(f"https://{BORING_HOST}/download?bytes={part}&pause_ms=1", method="GET",
                      repeat=4)
    assert res.result["total_len"] == 4 * part
    body = _chat_body("harness big answer")
    res = clients.raw(OPENAI_CHAT, body, body_dir=body_dir, repeat=2,
                      headers=("Content-Type: application/json", f"x-test-answer-bytes: {part}"))
    assert res.result["total_len"] > 2 * part
    got = tls_server.wait_for_request(lambda r: r.body == body)
    assert got.answer[:40] in res.answer()  # the client reports the first 64 KiB
