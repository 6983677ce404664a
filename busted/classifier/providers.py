"""Which LLM provider a message is talking to.

Evidence, strongest first: the TLS server name (SNI) or the Host header, the destination
port (Ollama's 11434), the request path, the body's shape. A known host decides alone
(``api.groq.com`` serving OpenAI-shaped bodies is Groq); an unknown host is an LLM
endpoint only if its path and body both look like one of the public API shapes, which
then names it ``OpenAI-compatible``, ``Anthropic-compatible``, ``Ollama``, ...
"""

from __future__ import annotations

import re
from typing import Any

OLLAMA_PORT = 11434

# Exact host names.
_EXACT: dict[str, str] = {
    "api.openai.com": "OpenAI",
    "chatgpt.com": "OpenAI",
    "api.anthropic.com": "Anthropic",
    "generativelanguage.googleapis.com": "Google",
    "aiplatform.googleapis.com": "Google",
    "api.cohere.ai": "Cohere",
    "api.cohere.com": "Cohere",
    "api-inference.huggingface.co": "HuggingFace",
    "router.huggingface.co": "HuggingFace",
    "api.mistral.ai": "Mistral",
    "codestral.mistral.ai": "Mistral",
    "api.groq.com": "Groq",
    "api.together.xyz": "Together",
    "api.together.ai": "Together",
    "api.deepseek.com": "DeepSeek",
    "api.perplexity.ai": "Perplexity",
    "ollama.com": "Ollama",
    "models.inference.ai.azure.com": "Azure",
}

# Host suffixes (a leading dot: any sub-domain).
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".openai.azure.com", "Azure"),
    (".cognitiveservices.azure.com", "Azure"),
    (".services.ai.azure.com", "Azure"),
    (".models.ai.azure.com", "Azure"),
    ("-aiplatform.googleapis.com", "Google"),  # regional Vertex AI endpoints
    (".openai.com", "OpenAI"),
    (".anthropic.com", "Anthropic"),
    (".endpoints.huggingface.cloud", "HuggingFace"),
    (".ollama.com", "Ollama"),
)

_BEDROCK_HOST = re.compile(
    r"^bedrock(?:-runtime|-agent-runtime|-agent)?(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com$"
)

PROVIDERS = (
    "OpenAI",
    "Anthropic",
    "Google",
    "Azure",
    "AWS Bedrock",
    "Cohere",
    "HuggingFace",
    "Mistral",
    "Groq",
    "Together",
    "DeepSeek",
    "Perplexity",
    "Ollama",
    "OpenAI-compatible",
    "Anthropic-compatible",
)


def split_host(value: str | None) -> tuple[str, int]:
    """``"Host: api.x.com:8443"`` -> ("api.x.com", 8443); the port is 0 when absent."""
    if not value:
        return "", 0
    host = value.strip().lower()
    port = 0
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        rest = host[end + 1 :]
        host = host[1:end] if end > 0 else host
        if rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit():
            port = int(rest[1:])
        return host, port
    if host.count(":") == 1:
        name, _, p = host.partition(":")
        if p.isascii() and p.isdigit():
            return name, int(p)
        return name, 0
    return host.rstrip("."), port


def provider_for_host(host: str) -> str | None:
    """The provider a host name belongs to, or None for any other host."""
    if not host:
        return None
    host = host.lower().rstrip(".")
    found = _EXACT.get(host)
    if found:
        return found
    for suffix, provider in _SUFFIXES:
        if host.endswith(suffix):
            return provider
    if host.endswith(".amazonaws.com") and host.startswith("bedrock") and _BEDROCK_HOST.match(host):
        return "AWS Bedrock"
    return None


# --- shapes of paths and bodies ---------------------------------------------------------

_OPENAI_TAILS = (
    "/chat/completions",
    "/completions",
    "/responses",
    "/embeddings",
    "/moderations",
    "/images/generations",
    "/audio/transcriptions",
    "/audio/speech",
)
_OLLAMA_PATHS = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings")
_GEMINI_PATH = re.compile(
    r"/models/[^/:]+:(?:stream)?[gG]enerateContent|/models/[^/:]+:(?:countTokens|embedContent|batchEmbedContents|predict)"
)


def path_shape(path: str) -> str | None:
    """Which public API a request path belongs to: "openai", "anthropic", "ollama",
    "gemini", "azure", "bedrock", "huggingface", or None."""
    if not path:
        return None
    if "/openai/deployments/" in path:
        return "azure"
    if path.endswith("/messages") or path.endswith("/messages/count_tokens") or path.endswith("/v1/complete"):
        return "anthropic"
    if path.endswith(_OPENAI_TAILS):
        return "openai"
    if path in _OLLAMA_PATHS:
        return "ollama"
    if ":" in path and _GEMINI_PATH.search(path):
        return "gemini"
    if path.startswith("/model/") and path.endswith(
        ("/invoke", "/invoke-with-response-stream", "/converse", "/converse-stream")
    ):
        return "bedrock"
    if path.startswith("/models/") or "/hf-inference/models/" in path:
        return "huggingface"
    return None


def body_shape(obj: Any) -> str | None:
    """Which API a JSON request body is shaped for (same names as :func:`path_shape`)."""
    if not isinstance(obj, dict):
        return None
    messages = obj.get("messages")
    if isinstance(messages, list):
        if "anthropic_version" in obj or isinstance(obj.get("system"), (str, list)) and "max_tokens" in obj:
            return "anthropic"
        model = obj.get("model")
        if isinstance(model, str) and model.startswith("claude") and "max_tokens" in obj:
            return "anthropic"
        if "model" in obj:
            if "options" in obj or "keep_alive" in obj or "format" in obj and "model" in obj:
                return "ollama"
            return "openai"
        if messages and isinstance(messages[0], dict) and isinstance(messages[0].get("content"), list):
            first = messages[0]["content"][0] if messages[0]["content"] else None
            if isinstance(first, dict) and "text" in first and "type" not in first:
                return "bedrock"  # Converse: content blocks without a type
        return None
    if isinstance(obj.get("contents"), list):
        return "gemini"
    if "model" in obj and ("input" in obj or "prompt" in obj):
        if "options" in obj or "keep_alive" in obj:
            return "ollama"
        return "openai"
    return None


_SHAPE_PROVIDER = {
    "openai": "OpenAI-compatible",
    "anthropic": "Anthropic-compatible",
    "ollama": "Ollama",
    "gemini": "Google",
    "azure": "Azure",
    "bedrock": "AWS Bedrock",
}


def detect(
    host: str, port: int, path: str, obj: Any, headers_hint: str | None = None
) -> tuple[str | None, float]:
    """Provider of a request and how sure we are of it (0..1).

    ``headers_hint`` is "anthropic" or "openai" when provider-specific headers were
    sent (``anthropic-version``, ``openai-organization``, ...).
    """
    known = provider_for_host(host)
    if known:
        return known, 0.95
    if port == OLLAMA_PORT:
        return "Ollama", 0.9
    pshape = path_shape(path)
    bshape = body_shape(obj)
    if pshape == "azure":
        return "Azure", 0.85
    if pshape == "gemini":
        return "Google", 0.8
    if pshape == "ollama" and bshape in ("ollama", "openai"):
        return "Ollama", 0.8
    if pshape == "bedrock" and "bedrock" in host:
        return "AWS Bedrock", 0.8
    if pshape == "anthropic" and (bshape in ("anthropic", "openai") or headers_hint == "anthropic"):
        return "Anthropic-compatible", 0.85
    if pshape == "openai" and bshape in ("openai", "anthropic", "ollama"):
        if headers_hint == "anthropic":
            return "Anthropic-compatible", 0.8
        return "OpenAI-compatible", 0.85
    if not path and bshape:  # a bare body: no path or host to go by
        if headers_hint == "anthropic":
            return "Anthropic-compatible", 0.6
        return _SHAPE_PROVIDER.get(bshape), 0.6
    return None, 0.0
