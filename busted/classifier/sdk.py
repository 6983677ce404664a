"""Which client library sent a request: ``agent_sdk`` and ``agent_sdk_version``.

Sources: the ``User-Agent`` (``OpenAI/Python 1.40.0``, ``Anthropic/JS 0.30.1``,
``Boto3/1.34.0 ...``, ``ollama-python/0.3.0``, ``curl/8.1``), Stainless headers
(``x-stainless-lang``, ``x-stainless-package-version``), Fern headers
(``x-fern-sdk-name``), and Google's ``x-goog-api-client``. Frameworks that wrap an SDK
(LangChain, LlamaIndex, LiteLLM) win over the SDK they wrap when they say so anywhere
in those headers. Names are lower-case and hyphenated.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FRAMEWORKS = (
    ("langchain", "langchain"),
    ("llama-index", "llama-index"),
    ("llama_index", "llama-index"),
    ("llamaindex", "llama-index"),
    ("litellm", "litellm"),
    ("crewai", "crewai"),
    ("autogen", "autogen"),
    ("openai-agents", "openai-agents"),
    ("pydantic-ai", "pydantic-ai"),
)

# Stainless SDKs say "<Vendor>/<Lang> <version>".
_STAINLESS_UA = re.compile(r"^([A-Za-z][A-Za-z0-9]*)/(Python|JS|Node|Java|Go|Kotlin|Ruby)\s+v?([\w.+-]+)")
_LANG_SUFFIX = {
    "python": "python",
    "js": "node",
    "node": "node",
    "java": "java",
    "go": "go",
    "kotlin": "kotlin",
    "ruby": "ruby",
}
# Vendors whose JS package is conventionally called "-typescript".
_TS_VENDORS = frozenset(("anthropic",))

# "product/version" User-Agent tokens, most specific first.
_UA_TOKENS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.I), name)
    for pattern, name in (
        (r"\bclaude-cli/([\w.+-]+)", "claude-code"),
        (r"\bcodex_cli_rs/([\w.+-]+)", "codex-cli"),
        (r"\bollama-python/([\w.+-]+)", "ollama-python"),
        (r"\bollama-js/([\w.+-]+)", "ollama-js"),
        (r"\bgoogle-genai-sdk/([\w.+-]+)", "google-genai"),
        (r"\bgenai-py/([\w.+-]+)", "google-generativeai"),
        (r"\bmistral-client-python/([\w.+-]+)", "mistral-python"),
        (r"\bmistralai/([\w.+-]+)", "mistral-python"),
        (r"\bcohere-python/([\w.+-]+)", "cohere-python"),
        (r"\bhuggingface_hub/([\w.+-]+)", "huggingface-hub"),
        (r"\bBoto3/([\w.+-]+)", "boto3"),
        (r"\bBotocore/([\w.+-]+)", "botocore"),
        (r"\baws-sdk-js/([\w.+-]+)", "aws-sdk-js"),
        (r"\bai-sdk/[\w-]+/([\w.+-]+)", "vercel-ai-sdk"),
        (r"\bpython-httpx/([\w.+-]+)", "httpx"),
        (r"\bpython-requests/([\w.+-]+)", "python-requests"),
        (r"\baiohttp/([\w.+-]+)", "aiohttp"),
        (r"\bpython-urllib3/([\w.+-]+)", "urllib3"),
        (r"\bPython-urllib/([\w.+-]+)", "python-urllib"),
        (r"\baxios/([\w.+-]+)", "axios"),
        (r"\bnode-fetch/([\w.+-]+)", "node-fetch"),
        (r"\bundici(?:/([\w.+-]+))?", "undici"),
        (r"\bokhttp/([\w.+-]+)", "okhttp"),
        (r"\bGo-http-client/([\w.+-]+)", "go-http-client"),
        (r"\bcurl/([\w.+-]+)", "curl"),
        (r"\bWget/([\w.+-]+)", "wget"),
        (r"^node$()", "node-fetch"),
        (r"\bMozilla/([\w.+-]+)", "browser"),
    )
)


def _framework(values: str) -> tuple[str, str | None] | None:
    low = values.lower()
    for needle, name in _FRAMEWORKS:
        if needle in low:
            found = re.search(re.escape(needle) + r"[\w-]*[/ ]v?([0-9][\w.+-]*)", low)
            return name, found.group(1) if found else None
    return None


_HEADERS = (
    "user-agent", "x-goog-api-client", "x-fern-sdk-name", "x-stainless-helper", "x-stainless-lang",
    "x-stainless-package-version", "x-fern-language", "x-fern-sdk-version",
)  # fmt: skip
_cache: dict[tuple[str | None, ...], tuple[str | None, str | None]] = {}


def detect(header: Callable[[str], str | None]) -> tuple[str | None, str | None]:
    """(agent_sdk, agent_sdk_version) from a message's headers (look-up function)."""
    key = tuple(header(name) for name in _HEADERS)
    found = _cache.get(key)
    if found is None:
        found = _detect(dict(zip(_HEADERS, key, strict=True)).get)
        if len(_cache) < 4096:  # the same few clients call again and again
            _cache[key] = found
    return found


def _detect(header: Callable[[str], str | None]) -> tuple[str | None, str | None]:
    ua = header("user-agent") or ""
    goog = header("x-goog-api-client") or ""
    fern = header("x-fern-sdk-name")
    framework = _framework(" ".join((ua, goog, header("x-stainless-helper") or "", fern or "")))
    if framework:
        return framework
    lang = (header("x-stainless-lang") or "").lower()
    match = _STAINLESS_UA.match(ua)
    if match:
        vendor = match.group(1).lower()
        ua_lang = match.group(2).lower()
        version = header("x-stainless-package-version") or match.group(3)
        return _stainless_name(vendor, lang or ua_lang), version
    if lang:  # Stainless headers with a custom User-Agent
        version = header("x-stainless-package-version")
        vendor = "openai"
        for needle in ("anthropic", "groq", "together", "cerebras", "openai"):
            if needle in ua.lower():
                vendor = needle
                break
        return _stainless_name(vendor, lang), version
    if fern:
        fern_lang = (header("x-fern-language") or "").lower()
        name = fern.lower().replace("_", "-").removesuffix("ai")
        suffix = _LANG_SUFFIX.get(fern_lang.split()[0] if fern_lang else "", fern_lang)
        return (f"{name}-{suffix}" if suffix else name), header("x-fern-sdk-version")
    for text in (ua, goog):
        if not text:
            continue
        for pattern, name in _UA_TOKENS:
            found = pattern.search(text)
            if found:
                version = found.group(1) if found.groups() else None
                return name, version or None
    return None, None


def _stainless_name(vendor: str, lang: str) -> str:
    suffix = _LANG_SUFFIX.get(lang, lang or "python")
    if suffix == "node" and vendor in _TS_VENDORS:
        suffix = "typescript"
    return f"{vendor}-{suffix}"
