"""Real Claude Code, Bun and Gemini CLI, seen by the real monitor (issue 11).

Claude Code's native binary is a Bun executable with BoringSSL linked in and no SSL
symbols: busted finds SSL_write / SSL_read / SSL_do_handshake by their error reports
(busted/kernel/tls/boringssl.py). Each pinned release (two Claude Code releases months
apart, two Bun releases) runs once with a prompt against the fake Anthropic API (HTTPS
on the test loopback address under its real name, the test CA trusted), while the
session's monitor (default flags) runs: the request must come out as an LLM_REQUEST of
provider Anthropic with the model and the prompt typed, the streamed answer in the
LLM_RESPONSE, both with the agent's pid, process name and the SNI it sent.

Gemini CLI (the npm bundle on the system node) sends ~31 KB per request, its prompt at
the end: with the monitor's default flags the request must arrive whole (not truncated,
more than the 16 KiB a default copy once stopped at), provider Google, the prompt typed.

With ``--enforce`` and the seed's rule adapted to Anthropic (deny when the payload holds
"berko"), Claude Code is killed before the fake API receives such a prompt, and a run
without it completes.

The binaries live where agents install, so the monitor probes them when it starts; each
test still checks the monitor's "BoringSSL probes on PATH" line first (after a
``--version`` run if it is missing), so a program probed only at its exec would not race.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from .harness import agents
from .harness.events import Event, payload_text, summarize
from .harness.monitor import berko_rule, enforcing_monitor
from .harness.pki import ANTHROPIC_HOST, BORING_HOST, GEMINI_HOST

pytestmark = pytest.mark.privileged

TIMEOUT = 30.0
RUN_TIMEOUT = 120.0  # one agent run on a loaded 2-core machine


def _marker(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def _probed(monitor, clients, binary) -> None:
    agents.wait_probed(monitor, binary, lambda: clients.run([str(binary), "--version"],
                                                            timeout=RUN_TIMEOUT, check=False))


def _llm_event(monitor, pid: int, content_class: str, match, what: str) -> Event:
    return monitor.events.wait_for(
        lambda e: e.get("pid") == pid and e.get("content_class") == content_class and match(e),
        TIMEOUT, what, pid)


def _check_conversation(monitor, tls_server, result, prompt: str, process_name: str,
                        provider: str = "Anthropic", model: str = agents.MODEL,
                        path: str = "/v1/messages", host: str = ANTHROPIC_HOST) -> Event:
    """The monitor reported the request and its streamed answer, as the server saw them.
    Returns the LLM_REQUEST event."""
    request = tls_server.wait_for_request(
        lambda r: r.path.startswith(path) and prompt.encode() in r.body, TIMEOUT)
    assert request.sni == host, f"the agent sent SNI {request.sni!r}, not {host}"
    assert request.answer in result.stdout, f"the agent did not print the answer:\n{result.stdout}"
    sent = _llm_event(monitor, result.pid, "LLM_REQUEST",
                      lambda e: prompt in (e.get("llm_user_message") or ""),
                      f"the LLM_REQUEST of pid {result.pid} holding the prompt")
    assert sent.get("llm_user_message") == prompt, summarize(sent)
    assert sent.get("llm_provider") == provider, summarize(sent)
    assert sent.get("llm_model") == model, summarize(sent)
    assert sent.get("process_name") == process_name, summarize(sent)
    assert sent.get("sni") == host, summarize(sent)
    answer = _llm_event(monitor, result.pid, "LLM_RESPONSE",
                        lambda e: request.answer in (e.get("llm_response_preview") or ""),
                        f"the LLM_RESPONSE of pid {result.pid} with '{request.answer}'")
    assert answer.get("llm_provider") == provider, summarize(answer)
    assert answer.get("process_name") == process_name, summarize(answer)
    assert answer.get("sni") == host, summarize(answer)
    return sent


@pytest.mark.parametrize("name", agents.names("claude-"))
def test_claude_code_conversation_is_seen(name, monitor, tls_server, clients, tmp_path):
    binary = agents.program(name)
    _probed(monitor, clients, binary)
    prompt = f"Write a haiku about {_marker('eBPF')}"
    result = clients.run(agents.claude_argv(binary, prompt, tmp_path / "work"),
                         timeout=RUN_TIMEOUT, env=agents.claude_env(tmp_path / "home"))
    _check_conversation(monitor, tls_server, result, prompt, "claude")


@pytest.mark.parametrize("name", agents.names("bun-"))
def test_bun_fetch_is_seen(name, monitor, tls_server, clients, tmp_path):
    binary = agents.program(name)
    _probed(monitor, clients, binary)
    prompt = f"Hello from Bun {_marker('fetch')}"
    result = clients.run(agents.bun_argv(binary, tmp_path, agents.BUN_FETCH, prompt, agents.MODEL),
                         timeout=RUN_TIMEOUT, env=agents.bun_env())
    assert result.result.get("pid") == result.pid, result.stdout
    _check_conversation(monitor, tls_server, result, prompt, "bun")


@pytest.mark.parametrize("name", agents.names("gemini-"))
def test_gemini_cli_request_arrives_whole(name, monitor, tls_server, clients, tmp_path):
    """`gemini -p`: one ~31 KB streamed request, the prompt after Gemini CLI's own
    <session_context> part, seen whole with the monitor's default flags."""
    script = agents.program(name)
    prompt = f"Explain {_marker('uprobes')} in one line"
    result = clients.run(agents.gemini_argv(script, prompt, tmp_path / "work"),
                         timeout=RUN_TIMEOUT, env=agents.gemini_env(tmp_path / "home"))
    sent = _check_conversation(monitor, tls_server, result, prompt, "node", provider="Google",
                               model=agents.GEMINI_MODEL,
                               path=f"/v1beta/models/{agents.GEMINI_MODEL}:streamGenerateContent",
                               host=GEMINI_HOST)
    assert not sent.get("truncated"), summarize(sent)
    assert sent.get("bytes", 0) > 16384, summarize(sent)
    assert sent.get("llm_stream") is True, summarize(sent)


def test_bun_reused_ssl_object_does_not_inherit_a_verdict(monitor, tls_server, clients,
                                                          tmp_path):
    """Bun frees a connection's SSL object and the next connection gets the same
    address: the download before (judged uninteresting, no longer copied) must not
    hide the Anthropic request after it (SSL_do_handshake's probe forgets the verdict)."""
    binary = agents.program(agents.names("bun-")[-1])
    _probed(monitor, clients, binary)
    prompt = f"Asked after a download {_marker('reuse')}"
    result = clients.run(agents.bun_argv(binary, tmp_path, agents.BUN_DOWNLOAD_THEN_ASK, prompt,
                                         agents.MODEL, BORING_HOST),
                         timeout=RUN_TIMEOUT, env=agents.bun_env())
    sent = _llm_event(monitor, result.pid, "LLM_REQUEST",
                      lambda e: prompt in (e.get("llm_user_message") or ""),
                      f"the LLM_REQUEST of pid {result.pid} after its download")
    download = monitor.events.wait_for(
        lambda e: e.get("event_type") == "TLS_DATA_WRITE" and "/download" in payload_text(e),
        TIMEOUT, f"the download request of pid {result.pid}", result.pid)
    assert download.get("conn_id") == sent.get("conn_id"), (
        "Bun did not reuse the SSL object: this test no longer checks what it is for\n"
        + monitor.events.describe(result.pid))


# --- enforcement ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def enforcing(tls_server):
    with enforcing_monitor(berko_rule("Anthropic")) as proc:
        yield proc


@pytest.mark.parametrize("name", agents.names("claude-"))
def test_enforce_stops_claude_code_before_a_denied_prompt_leaves(name, enforcing, tls_server,
                                                                  clients, tmp_path):
    binary = agents.program(name)
    _probed(enforcing, clients, binary)

    denied = f"Tell {_marker('berko')} a joke"
    result = clients.run(agents.claude_argv(binary, denied, tmp_path / "work"),
                         timeout=RUN_TIMEOUT, env=agents.claude_env(tmp_path / "denied"),
                         check=False)
    assert result.returncode == -signal.SIGKILL, (
        f"claude was not killed (exit {result.returncode}):\n{result.stderr[-1500:]}")
    killed = enforcing.events.wait_for(
        lambda e: e.get("event_type") == "ENFORCEMENT" and e.get("action") == "killed",
        TIMEOUT, f"an ENFORCEMENT killed event of pid {result.pid}", result.pid)
    assert killed.get("llm_provider") == "Anthropic", summarize(killed)
    time.sleep(0.5)  # anything in flight would have arrived by now
    assert denied.encode() not in tls_server.received(), "the fake API received the denied prompt"

    # a HOME of its own: Claude Code may quote the sessions before it
    allowed = f"Tell {_marker('kitten')} a joke"
    result = clients.run(agents.claude_argv(binary, allowed, tmp_path / "work"),
                         timeout=RUN_TIMEOUT, env=agents.claude_env(tmp_path / "allowed"),
                         check=False)
    assert result.returncode == 0, (f"claude failed (exit {result.returncode}): "
                                    f"{result.stderr[-1000:]}\n{enforcing.events.describe(result.pid)}")
    request = tls_server.wait_for_request(lambda r: allowed.encode() in r.body, TIMEOUT)
    assert request.answer in result.stdout, result.stdout
