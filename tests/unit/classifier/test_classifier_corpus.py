"""Every fixture in the corpus (real SDK captures, provider-doc requests, negatives)
classifies to what its manifest entry says, and no secret leaks into the output."""

from __future__ import annotations

import json

import pytest
from classifier_corpus import CORPUS, load_manifest

from busted.classifier import classify
from busted.schema import CONTENT_CLASSES

CASES = load_manifest()
FIELDS_ALLOWED = {
    "content_class", "classifier_confidence", "llm_provider", "llm_endpoint", "llm_model", "llm_stream",
    "llm_system_prompt", "llm_user_message", "llm_response_preview", "llm_input_tokens", "llm_output_tokens",
    "agent_sdk", "agent_sdk_version", "http_headers", "mcp_method", "mcp_tool", "pii_detected", "pii_types",
    "tls_payload",
}  # fmt: skip
SECRETS = (
    "FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE0123456789",  # OpenAI key body
    "FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE-0123456789AA",  # Anthropic key body
    "SyFAKEFAKEFAKEFAKEFAKEFAKEFAKE12345",  # Google key
    "0123456789abcdef0123456789abcdef",  # Azure api-key
    "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",  # SigV4 signature
    "session=abcdef0123456789",
    "b3BlbnNzaC1rZXktdjEAAAAA",  # private key body
)


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_fixture(case: dict) -> None:
    data = (CORPUS / case["file"]).read_bytes()
    got = classify(data, case["direction"], case.get("sni"), case.get("dst"))
    for name, want in case["expect"].items():
        assert got.get(name) == want, f"{name}: want {want!r}, got {got.get(name)!r}"
    for name in case.get("absent", []):
        assert not got.get(name), f"{name} should be absent, got {got[name]!r}"
    assert set(got) <= FIELDS_ALLOWED
    assert got.get("content_class", "UNKNOWN") in CONTENT_CLASSES
    assert 0.0 <= got.get("classifier_confidence", 0.0) <= 1.0
    json.dumps(got)  # everything is JSON-serialisable
    text = json.dumps(got)
    for secret in SECRETS:
        assert secret not in text, f"secret {secret[:12]}... leaked"


def test_every_provider_and_class_is_covered() -> None:
    providers = {c["expect"].get("llm_provider") for c in CASES}
    assert {
        "OpenAI", "Anthropic", "Google", "Azure", "AWS Bedrock", "Cohere", "HuggingFace", "Mistral", "Groq",
        "Together", "DeepSeek", "Perplexity", "Ollama", "OpenAI-compatible", "Anthropic-compatible",
    } <= providers  # fmt: skip
    classes = {c["expect"].get("content_class") for c in CASES}
    assert set(CONTENT_CLASSES) <= classes
