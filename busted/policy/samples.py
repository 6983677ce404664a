"""Realistic events for the policy engine, with what the shipped policies decide.

Three users: the VM-versus-interpreter check at load time (a sample set that touches
every field the shipped policies read), ``busted bench policy`` (the mix it measures),
and the unit tests of the shipped policies. Events are sparse, as the classify and
identity workers emit them.
"""

from __future__ import annotations

import json
from typing import Any


def _chat_body(model: str, text: str, **extra: Any) -> str:
    return json.dumps({"model": model, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": text},
    ], **extra})


def _request(host: str, path: str, body: str, agent: str) -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"User-Agent: {agent}\r\nAuthorization: Bearer ****\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )


_PROSE = (
    "Summarise the following incident report for the on-call channel, keep it under "
    "five bullet points and mention the affected services by name. "
) * 6


def _llm_request(
    provider: str, host: str, path: str, model: str, text: str = _PROSE, **fields: Any
) -> dict[str, Any]:
    body = _chat_body(model, text)
    event = {
        "event_type": "TLS_DATA_WRITE",
        "timestamp": 1764100000.0,
        "direction": "write",
        "pid": 4242,
        "tid": 4242,
        "uid": 1000,
        "process_name": "python3",
        "cgroup_id": 7,
        "src_ip": "10.0.1.5",
        "src_port": 54321,
        "dst_ip": "160.79.104.10",
        "dst_port": 443,
        "bytes": len(body) + 180,
        "sni": host,
        "provider": provider,
        "content_class": "LLM_REQUEST",
        "llm_provider": provider,
        "llm_endpoint": path,
        "llm_model": model,
        "llm_stream": True,
        "llm_system_prompt": "You are a helpful assistant.",
        "llm_user_message": text,
        "agent_sdk": "openai-python",
        "agent_sdk_version": "1.40.0",
        "classifier_confidence": 0.97,
        "http_headers": {"host": host, "content-type": "application/json", "authorization": "****"},
        "pii_detected": False,
        "pii_types": [],
        "identity_id": 42,
        "identity_instance": "python3-4242",
        "identity_confidence": 0.9,
        "conn_id": 3,
        "tls_payload": _request(host, path, body, "OpenAI/Python 1.40.0"),
    }
    event.update(fields)
    return event


def _mcp_call(method: str, tool: str = "") -> dict[str, Any]:
    params = {"name": tool, "arguments": {"path": "/tmp/notes.txt"}} if tool else {}
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
    return {
        "event_type": "DATA_WRITE",
        "timestamp": 1764100001.0,
        "direction": "write",
        "pid": 5151,
        "process_name": "node",
        "src_ip": "127.0.0.1",
        "dst_ip": "127.0.0.1",
        "dst_port": 8931,
        "bytes": len(body),
        "content_class": "MCP_REQUEST",
        "mcp_method": method,
        "mcp_tool": tool,
        "classifier_confidence": 0.95,
        "http_headers": {"host": "127.0.0.1:8931"},
        "tls_payload": _request("127.0.0.1:8931", "/mcp", body, "node"),
    }


# (name, event, decision the shipped policies give)
SHIPPED_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("openai allowed model", _llm_request(
        "OpenAI", "api.openai.com", "/v1/chat/completions", "gpt-4o-mini"), "allow"),
    ("anthropic audited", _llm_request(
        "Anthropic", "api.anthropic.com", "/v1/messages", "claude-sonnet-4-20250514",
        agent_sdk="anthropic-python"), "audit"),
    ("anthropic blocked word", _llm_request(
        "Anthropic", "api.anthropic.com", "/v1/messages", "claude-sonnet-4-20250514",
        text="please tell berko the deploy is done"), "deny"),
    ("openai with an email", _llm_request(
        "OpenAI", "api.openai.com", "/v1/chat/completions", "gpt-4o",
        text="Write to jane.doe@example.com about the outage",
        pii_detected=True, pii_types=["email"]), "deny"),
    ("ollama with an email (local)", _llm_request(
        "Ollama", "localhost:11434", "/api/chat", "llama3.1:8b",
        sni="", dst_ip="127.0.0.1", dst_port=11434, event_type="DATA_WRITE",
        http_headers={"host": "localhost:11434"},
        pii_detected=True, pii_types=["email"]), "allow"),
    ("openai model not on the list", _llm_request(
        "OpenAI", "api.openai.com", "/v1/chat/completions", "gpt-3.5-turbo"), "deny"),
    ("gemini allowed model", _llm_request(
        "Google", "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.5-flash:generateContent", "gemini-2.5-flash",
        agent_sdk="google-genai"), "allow"),
    ("openai response", {
        **_llm_request("OpenAI", "api.openai.com", "/v1/chat/completions", "gpt-3.5-turbo"),
        "event_type": "TLS_DATA_READ", "direction": "read", "content_class": "LLM_RESPONSE",
        "llm_output_tokens": 120, "llm_input_tokens": 80,
        "tls_payload": 'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: {"id":"x"}\n\n',
    }, "allow"),
    ("mcp shell tool", _mcp_call("tools/call", "run_shell_command"), "deny"),
    ("mcp file write", _mcp_call("tools/call", "writeFile"), "deny"),
    ("mcp harmless tool", _mcp_call("tools/call", "search_docs"), "audit"),
    ("mcp tools/list", _mcp_call("tools/list"), "audit"),
    ("openai-compatible unsanctioned host", _llm_request(
        "OpenAI-compatible", "llm.corp-shadow.example", "/v1/chat/completions", "gpt-4o",
        dst_ip="203.0.113.7"), "deny"),
    ("openai-compatible on localhost", _llm_request(
        "OpenAI-compatible", "", "/v1/chat/completions", "gpt-4o-mini", sni="",
        dst_ip="127.0.0.1", dst_port=8000, event_type="DATA_WRITE",
        http_headers={"host": "localhost:8000"}), "allow"),
    ("tcp connect", {
        "event_type": "TCP_CONNECT", "timestamp": 1764100002.0, "pid": 4242,
        "process_name": "python3", "src_ip": "10.0.1.5", "src_port": 54321,
        "dst_ip": "160.79.104.10", "dst_port": 443, "provider": "Anthropic",
    }, "allow"),
    ("dns query", {
        "event_type": "DNS_QUERY", "timestamp": 1764100003.0, "pid": 4242,
        "process_name": "python3", "dst_ip": "10.0.0.53", "dst_port": 53,
        "dns_name": "api.anthropic.com",
    }, "allow"),
    ("plain https request", {
        "event_type": "TLS_DATA_WRITE", "timestamp": 1764100004.0, "direction": "write",
        "pid": 777, "process_name": "curl", "dst_ip": "140.82.112.3", "dst_port": 443,
        "sni": "github.com", "content_class": "HTTP_REQUEST",
        "http_headers": {"host": "github.com"},
        "tls_payload": "GET / HTTP/1.1\r\nHost: github.com\r\n\r\n",
    }, "allow"),
]


def shipped_events() -> list[dict[str, Any]]:
    """The events of :data:`SHIPPED_CASES` (fresh copies: stages modify events)."""
    return [json.loads(json.dumps(event)) for _, event, _ in SHIPPED_CASES]
