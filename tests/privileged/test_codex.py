"""OpenAI Codex (static, stripped Rust: rustls on aws-lc) seen and stopped, for real.

The two pinned Codex releases (months apart: 0.148.0 and 0.171.0) run
``codex exec --skip-git-repo-check PROMPT`` against the fake Responses API: first over
the WebSocket Codex opens by default (``permessage-deflate`` on), then over HTTPS with
SSE (a provider entry without WebSockets). The monitor must report the turn as an
LLM_REQUEST (provider OpenAI, the model, ``llm_user_message`` = the prompt) and the
answer as an LLM_RESPONSE (its text and token usage), from process ``codex``, on the
connection the fake API saw. Under ``--enforce`` a prompt with "berko" is stopped before
the fake API gets it, and one without completes.

Nothing here is synthetic: the probes are found in the stripped binaries by
busted/kernel/tls/rustls.py and attached by the real monitor.
"""

from __future__ import annotations

import signal
import ssl
import uuid

import pytest

from .harness import codex as codex_harness
from .harness import fake_apis
from .harness.codex import Codex
from .harness.events import summarize
from .harness.http_server import HttpServer
from .harness.monitor import berko_rule, enforcing_monitor
from .harness.namespace import ClientNamespace
from .harness.pki import HOSTS

pytestmark = pytest.mark.privileged

TIMEOUT = 30.0


@pytest.fixture(scope="module", params=codex_harness.VERSIONS)
def codex(request, namespace, harness_dir):
    why = codex_harness.missing(request.param)
    if why:
        pytest.fail(why)
    return Codex(namespace, request.param, harness_dir)


@pytest.fixture(scope="module")
def enforcing(tls_server):
    with enforcing_monitor(berko_rule("OpenAI")) as proc:
        yield proc


@pytest.fixture(scope="module")
def tls12(pki, loopback_addr, harness_dir):
    """The fake APIs again, on an address of their own, speaking TLS 1.2 at most (rustls
    then seals with EVP_AEAD_CTX_seal_scatter, and the records' additional data is the
    13-byte TLS 1.2 header)."""
    a, b, c, d = loopback_addr.split(".")
    address = f"{a}.{b}.{c}.{(int(d) + 1) % 254 + 1}"  # not blocked_addr (d + 1)
    contexts = {host: pki.server_context(host) for host in HOSTS}
    for context in contexts.values():
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    directory = harness_dir / "tls12"
    directory.mkdir(exist_ok=True)
    with HttpServer(address, 443, fake_apis.route, contexts, default_host=HOSTS[0]) as server:
        yield server, ClientNamespace(directory, address, HOSTS, pki.ca_pem)


def _prompt(word: str) -> str:
    return f"please {word} {uuid.uuid4().hex[:10]}"


def _sent(tls_server, prompt: str, method: str):
    """The request (or WebSocket message) that carried this prompt to the fake API."""
    return tls_server.wait_for_request(
        lambda r: r.method == method and prompt.encode() in r.body and r.answer, TIMEOUT)


def _turn(monitor, pid: int, prompt: str) -> tuple[dict, dict]:
    """The LLM_REQUEST carrying the prompt and the LLM_RESPONSE after it, for one pid."""
    def find(events):
        asked = next((e for e in events if e.get("content_class") == "LLM_REQUEST"
                      and e.get("llm_user_message") == prompt), None)
        if asked is None:
            return None
        later = [e for e in events if e.get("content_class") == "LLM_RESPONSE"
                 and e.get("conn_id") == asked.get("conn_id")
                 and (e.get("seq") or 0) > (asked.get("seq") or 0)]
        return (asked, later[0]) if later else None
    return monitor.events.wait_until(find, TIMEOUT, f"the Codex turn of pid {pid}", pid)


def _check_turn(monitor, tls_server, loopback_addr, run, prompt: str, method: str) -> None:
    assert run.returncode == 0, f"codex failed ({run.returncode}):\n{run.stderr[-2000:]}"
    sent = _sent(tls_server, prompt, method)
    assert sent.answer in run.stdout, run.stdout[-1000:]
    asked, answer = _turn(monitor, run.pid, prompt)
    model = codex_harness.request_model(sent.body)
    for event in (asked, answer):
        assert event.get("process_name") == "codex", summarize(event)
        assert event.get("llm_provider") == "OpenAI", summarize(event)
        assert event.get("llm_model") == model, summarize(event)
        assert event.get("llm_endpoint") == "/v1/responses", summarize(event)
        assert event.get("dst_ip") == loopback_addr and event.get("dst_port") == 443, summarize(event)
        assert event.get("src_port"), summarize(event)
    assert asked.get("event_type") == "TLS_DATA_WRITE" and answer.get("event_type") == "TLS_DATA_READ"
    assert sent.answer in answer.get("llm_response_preview", ""), summarize(answer)
    assert answer.get("llm_input_tokens") == 1200 and answer.get("llm_output_tokens") == 9
    # the connection the fake API saw is the one reported
    assert sent.peer[1] == asked.get("src_port"), (sent.peer, summarize(asked))


def test_codex_turn_over_its_websocket(codex, monitor, tls_server, loopback_addr):
    prompt = _prompt("say hi to the websocket")
    run = codex.run(prompt)
    _check_turn(monitor, tls_server, loopback_addr, run, prompt, "WS")


def test_codex_turn_over_https_with_sse(codex, monitor, tls_server, loopback_addr):
    prompt = _prompt("say hi over https")
    run = codex.run(prompt, https=True)
    _check_turn(monitor, tls_server, loopback_addr, run, prompt, "POST")


def test_codex_turn_over_tls12(codex, monitor, tls12, harness_dir):
    server, namespace = tls12
    prompt = _prompt("say hi over tls 1.2")
    run = Codex(namespace, codex.version, harness_dir).run(prompt)
    _check_turn(monitor, server, namespace.address, run, prompt, "WS")


def test_denied_codex_prompt_is_stopped_before_the_api_gets_it(codex, enforcing, tls_server):
    prompt = _prompt("tell berko a joke")
    run = codex.run(prompt)
    assert run.returncode == -signal.SIGKILL, (
        f"codex was not killed (exit {run.returncode}):\n{run.stderr[-1500:]}")
    marker = prompt.split()[-1].encode()
    assert not [r for r in tls_server.requests if marker in r.body], \
        "the fake API received the denied prompt"
    judged = enforcing.events.wait_for(
        lambda e: e.get("content_class") == "LLM_REQUEST" and e.get("policy") == "deny",
        TIMEOUT, f"the denied LLM_REQUEST of pid {run.pid}", pid=run.pid)
    assert judged.get("process_name") == "codex" and judged.get("llm_provider") == "OpenAI"
    killed = enforcing.events.wait_for(
        lambda e: e.get("event_type") == "ENFORCEMENT" and e.get("action") == "killed",
        TIMEOUT, f"the ENFORCEMENT event of pid {run.pid}", pid=run.pid)
    assert killed.get("policy") == "deny", summarize(killed)


def test_allowed_codex_prompt_completes_under_enforce(codex, enforcing, tls_server):
    prompt = _prompt("say hello")
    run = codex.run(prompt)
    assert run.returncode == 0, f"codex failed under --enforce ({run.returncode}):\n{run.stderr[-2000:]}"
    sent = _sent(tls_server, prompt, "WS")
    assert sent.answer in run.stdout
