"""Field extraction, provider rules, SDK names, MCP, PII checks and secret masking."""

# ruff: noqa: E501  (protocol samples and expectation tables read best one per line)
from __future__ import annotations

import json

import pytest

from busted.classifier import classify
from busted.classifier.llm import extract_request, model_from_path, salvage
from busted.classifier.mcp import request_fields, response_fields
from busted.classifier.pii import iban_ok, luhn_ok, scan
from busted.classifier.providers import detect, provider_for_host, split_host
from busted.classifier.redact import mask_header_value, mask_text
from busted.classifier.sdk import detect as sdk_detect


def post(path: str, host: str, body: dict | str, headers: str = "") -> bytes:
    data = body if isinstance(body, str) else json.dumps(body)
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Type: application/json\r\n"
            f"Content-Length: {len(data.encode())}\r\n\r\n{data}").encode()  # fmt: skip


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.openai.com", "OpenAI"), ("api.anthropic.com", "Anthropic"),
        ("generativelanguage.googleapis.com", "Google"), ("europe-west4-aiplatform.googleapis.com", "Google"),
        ("my-res.openai.azure.com", "Azure"), ("x.cognitiveservices.azure.com", "Azure"),
        ("bedrock-runtime.us-west-2.amazonaws.com", "AWS Bedrock"), ("api.cohere.ai", "Cohere"),
        ("api-inference.huggingface.co", "HuggingFace"), ("api.mistral.ai", "Mistral"), ("api.groq.com", "Groq"),
        ("api.together.xyz", "Together"), ("api.deepseek.com", "DeepSeek"), ("api.perplexity.ai", "Perplexity"),
        ("API.OPENAI.COM.", "OpenAI"), ("s3.amazonaws.com", None), ("huggingface.co", None), ("example.com", None),
        ("notopenai.com", None), ("openai.azure.com.evil.com", None),
    ],
)  # fmt: skip
def test_provider_for_host(host: str, provider: str | None) -> None:
    assert provider_for_host(host) == provider


def test_split_host() -> None:
    assert split_host("api.x.com:8443") == ("api.x.com", 8443)
    assert split_host("[::1]:11434") == ("::1", 11434)
    assert split_host(None) == ("", 0)


def test_sni_wins_over_body_shape() -> None:
    # An Anthropic-shaped body sent to Groq is Groq.
    body = {
        "model": "claude-x",
        "max_tokens": 5,
        "system": "s",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert classify(post("/openai/v1/chat/completions", "api.groq.com", body))["llm_provider"] == "Groq"
    # Host header says one thing, SNI another: the TLS server name decides.
    got = classify(post("/v1/chat/completions", "proxy.local", body), sni="api.deepseek.com")
    assert got["llm_provider"] == "DeepSeek"


def test_shape_rules_on_unknown_hosts() -> None:
    assert detect("x", 0, "/v1/chat/completions", {"model": "m", "messages": []})[0] == "OpenAI-compatible"
    assert (
        detect("x", 0, "/v1/messages", {"model": "m", "max_tokens": 1, "messages": []})[0]
        == "Anthropic-compatible"
    )
    assert detect("x", 0, "/v1/chat/completions", {"query": {}})[0] is None
    assert detect("x", 11434, "/anything", None)[0] == "Ollama"


def test_user_message_shapes() -> None:
    assert extract_request({"messages": [{"role": "user", "content": [{"type": "image_url"}, {"type": "text", "text": "b"}]}]})[
        "llm_user_message"] == "b"  # fmt: skip
    assert extract_request({"contents": [{"parts": [{"text": "g"}]}]})["llm_user_message"] == "g"
    assert extract_request({"model": "m", "prompt": "p", "system": "s"}, "/api/generate") == {
        "llm_model": "m", "llm_stream": True, "llm_system_prompt": "s", "llm_user_message": "p"}  # fmt: skip
    assert (
        extract_request({"input": [{"role": "user", "content": "r"}], "instructions": "i"})[
            "llm_user_message"
        ]
        == "r"
    )
    assert extract_request({"input": ["a", "b"]})["llm_user_message"] == "b"
    assert extract_request({"message": "cohere", "preamble": "pre"})["llm_system_prompt"] == "pre"


def test_model_from_path() -> None:
    assert model_from_path("/v1beta/models/gemini-pro:generateContent") == "gemini-pro"
    assert model_from_path("/model/amazon.titan-text-express-v1/invoke") == "amazon.titan-text-express-v1"
    assert model_from_path("/models/gpt2") == "gpt2"


def test_salvage_truncated_body() -> None:
    cut = '{"model":"gpt-4o","stream":true,"messages":[{"role":"system","content":"Be nice"},{"role":"user","content":"Tell me ab'
    obj = salvage(cut)
    assert obj is not None and obj["model"] == "gpt-4o" and obj["stream"] is True
    assert extract_request(obj)["llm_user_message"] == "Tell me ab"


@pytest.mark.parametrize(
    ("headers", "sdk"),
    [
        ({"user-agent": "OpenAI/Python 1.40.0", "x-stainless-lang": "python"}, ("openai-python", "1.40.0")),
        ({"user-agent": "OpenAI/JS 4.52.0", "x-stainless-lang": "js", "x-stainless-package-version": "4.52.0"}, ("openai-node", "4.52.0")),
        ({"user-agent": "Anthropic/JS 0.27.0", "x-stainless-lang": "js"}, ("anthropic-typescript", "0.27.0")),
        ({"user-agent": "Anthropic/Python 0.34.0"}, ("anthropic-python", "0.34.0")),
        ({"user-agent": "langchain-core/0.3.1 OpenAI/Python 1.40.0"}, ("langchain", "0.3.1")),
        ({"user-agent": "litellm/1.50.2"}, ("litellm", "1.50.2")),
        ({"user-agent": "llama-index/0.12.0"}, ("llama-index", "0.12.0")),
        ({"user-agent": "ollama-python/0.4.7 (x86_64 linux) Python/3.12.7"}, ("ollama-python", "0.4.7")),
        ({"user-agent": "curl/8.5.0"}, ("curl", "8.5.0")),
        ({"user-agent": "python-httpx/0.27.2"}, ("httpx", "0.27.2")),
        ({"user-agent": "Boto3/1.34.0 md/Botocore#1.34.0 Botocore/1.34.0"}, ("boto3", "1.34.0")),
        ({"x-goog-api-client": "google-genai-sdk/1.2.0 gl-python/3.11"}, ("google-genai", "1.2.0")),
        ({}, (None, None)),
    ],
)  # fmt: skip
def test_sdk_names(headers: dict[str, str], sdk: tuple) -> None:
    assert sdk_detect(headers.get) == sdk


def test_mcp_only_for_mcp_methods() -> None:
    assert request_fields({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search"}}) == {
        "mcp_method": "tools/call", "mcp_tool": "search"}  # fmt: skip
    assert request_fields({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": []}) is None
    assert request_fields([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]) == {"mcp_method": "ping"}
    assert response_fields({"jsonrpc": "2.0", "id": 1, "result": "0x1"}) is None
    assert response_fields({"jsonrpc": "2.0", "id": 1, "result": "0x1"}, on_mcp_session=True) == {}
    eth = post("/", "rpc.example", {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": [], "id": 83})
    assert classify(eth)["content_class"] == "HTTP_REQUEST"


def test_luhn_and_iban() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


@pytest.mark.parametrize(
    ("text", "types"),
    [
        ("write to a.b@example.co.uk", ["email"]),
        ("call (415) 555-0132 now", ["phone"]),
        ("ssn 123-45-6789", ["ssn"]),
        ("card 5500 0000 0000 0004", ["credit_card"]),
        ("card 5500 0000 0000 0005", []),  # fails Luhn
        ("IBAN GB82WEST12345698765432", ["iban"]),
        ("key AKIAIOSFODNN7EXAMPLE", ["aws_access_key"]),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", ["private_key"]),
        ("token ghp_" + "a" * 36, ["github_token"]),
        ("use sk-proj-" + "A1b2" * 10, ["api_key"]),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz", ["jwt"]),
        ('{"created": 1741569952, "max_tokens": 1024, "temperature": 0.7, "version": "2024-10-21"}', []),
        ("order 2024-01-15 build 1.2.3.4 port 8080", []),
    ],
)
def test_pii_scan(text: str, types: list[str]) -> None:
    assert scan(text) == types


def test_own_auth_header_is_not_pii_but_is_masked() -> None:
    data = post("/v1/chat/completions", "api.openai.com", {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                "Authorization: Bearer sk-proj-SECRETSECRETSECRETSECRET1234\r\nX-Api-Key: k-123\r\n")  # fmt: skip
    got = classify(data)
    assert got["pii_detected"] is False
    assert "SECRETSECRET" not in json.dumps(got)
    assert got["http_headers"]["authorization"] == "Bearer ***" and got["http_headers"]["x-api-key"] == "***"


def test_masking() -> None:
    assert mask_header_value("Cookie", "a=b") == "***"
    assert mask_header_value("x-portkey-api-key", "pk") == "***"
    assert mask_header_value(":authority", "api.openai.com") == "api.openai.com"
    assert mask_header_value("anthropic-ratelimit-tokens-limit", "100") == "100"
    assert mask_text("url ?key=AIzaSECRET&alt=sse") == "url ?key=***&alt=sse"
    assert mask_text('{"api_key": "hunter2"}') == '{"api_key": "***"}'
    assert "SECRET" not in mask_text("sk-ant-api03-SECRETSECRETSECRETSECRET")
    assert mask_text("nothing to see") == "nothing to see"
    got = classify(post("/v1beta/models/gemini-pro:generateContent?key=AIzaSyFAKEFAKEFAKEFAKEFAKEFAKEFAKE12345",
                        "generativelanguage.googleapis.com", {"contents": [{"parts": [{"text": "hi"}]}]}))  # fmt: skip
    assert (
        "FAKEFAKE" not in got["tls_payload"]
        and got["llm_endpoint"] == "/v1beta/models/gemini-pro:generateContent"
    )


def test_binary_bodies_are_not_scanned_for_pii():
    from busted.classifier import classify

    body = b"card 4111 1111 1111 1111 mail jane@example.com"
    for ctype, scanned in ((b"application/octet-stream", False), (b"image/png", False),
                           (b"text/plain", True)):
        data = (b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert bool(classify(data, direction="read").get("pii_detected")) is scanned, ctype


def test_agent_context_blocks_are_not_the_users_words() -> None:
    """Claude Code sends <system-reminder> blocks in the user's turn, Gemini CLI a
    <session_context>: llm_user_message is what the user typed."""
    claude = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nAs you answer, use this context.\n"
                                 "</system-reminder>\n"},
        {"type": "text", "text": "say berko twice"},
    ]}]}
    assert extract_request(claude)["llm_user_message"] == "say berko twice"
    gemini = {"contents": [{"role": "user", "parts": [
        {"text": "<session_context>\ncwd: /tmp\n</session_context>"}, {"text": "hello"}]}]}
    assert extract_request(gemini)["llm_user_message"] == "hello"
    only = {"messages": [{"role": "user", "content": "<system-reminder>x</system-reminder>"}]}
    assert extract_request(only)["llm_user_message"] == "<system-reminder>x</system-reminder>"
