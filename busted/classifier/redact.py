"""Masking of secrets in everything the classifier emits.

Credentials travel in the captured plaintext (``Authorization: Bearer sk-...``,
``x-api-key``, cookies, ``?key=AIza...`` in Gemini URLs) and sometimes inside prompts.
Events carry that plaintext to outputs, SIEMs and the dashboard, so every header value
of a credential header is replaced, and any key-looking token in free text is cut to a
short prefix plus ``***`` — enough to tell which kind of key leaked, useless to anyone
who reads the log.
"""

from __future__ import annotations

import re

from busted.classifier import locate

MASK = "***"

SECRET_HEADERS = frozenset(
    (
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "ocp-apim-subscription-key",
        "x-amz-security-token",
        "x-auth-token",
        "x-access-token",
        "openai-api-key",
        "anthropic-api-key",
    )
)

# Tokens that are credentials whatever surrounds them (see pii.py for the kinds).
_TOKEN = re.compile(
    rb"(?<![A-Za-z0-9_-])(?:"
    rb"sk-[A-Za-z0-9_-]{16,}"
    rb"|AIza[0-9A-Za-z_-]{30,}"
    rb"|gsk_[A-Za-z0-9]{20,}"
    rb"|hf_[A-Za-z0-9]{20,}"
    rb"|xox[abposr]-[A-Za-z0-9-]{10,}"
    rb"|[rs]k_live_[A-Za-z0-9]{16,}"
    rb"|pplx-[A-Za-z0-9]{20,}"
    rb"|r8_[A-Za-z0-9]{20,}"
    rb"|glpat-[A-Za-z0-9_-]{16,}"
    rb"|xai-[A-Za-z0-9]{20,}"
    rb"|gh[pousr]_[A-Za-z0-9]{30,}"
    rb"|github_pat_[A-Za-z0-9_]{30,}"
    rb"|(?:AKIA|ASIA)[A-Z0-9]{16}"
    rb"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    rb")"
)
# key=... in URLs and form bodies; "api_key": "..." in JSON.
_KEY_PARAM = re.compile(
    rb"((?:[?&]|\b)(?:key|api[_-]?key|access[_-]?token|token|secret|password|client_secret)=)[^&\s\"']+",
    re.I,
)
_KEY_JSON = re.compile(
    rb"(\"(?:api[_-]?key|apiKey|access[_-]?token|secret|password|client_secret|authorization)\"\s*:\s*\")[^\"]+",
    re.I,
)
_KEY_WORDS = (b"key=", b"token=", b"secret", b"password", b'key"', b'token"', b'authorization"')
_PRIVATE_KEY_BODY = re.compile(
    rb"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----).*?(-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    re.S,
)
# Custom credential headers (x-portkey-api-key, x-goog-user-token, ...); not counters
# such as anthropic-ratelimit-tokens-limit or x-amzn-bedrock-input-token-count.
_SECRET_NAME = re.compile(
    r"(?:key|token|secret|auth(?!ority)|cookie|password|signature|credential)(?!s|-count)"
)


def _keep_prefix(match: re.Match[bytes]) -> bytes:
    token = match.group()
    return token[: 4 if len(token) < 40 else 7] + b"***"


_secret_names: dict[str, bool] = {}  # header names repeat: decide each once


def _is_secret_header(name: str) -> bool:
    known = _secret_names.get(name)
    if known is None:
        low = name.lower()
        known = low in SECRET_HEADERS or (_SECRET_NAME.search(low) is not None and "ratelimit" not in low)
        if len(_secret_names) < 4096:
            _secret_names[name] = known
    return known


def mask_header_value(name: str, value: str) -> str:
    """The value to show for a header: credentials are replaced, the scheme kept."""
    if not _is_secret_header(name):
        return value
    scheme, sep, _ = value.partition(" ")
    if sep and scheme.lower() in ("bearer", "basic", "token", "digest", "aws4-hmac-sha256"):
        return f"{scheme} {MASK}"
    return MASK


def mask_bytes(data: bytes, tokens: list[tuple[int, int]] | None = None) -> tuple[bytes, bool]:
    """Replace key-looking tokens and key=value secrets; (masked, anything changed).

    ``tokens`` are the :func:`locate.token_windows` of ``data`` if already known.
    """
    if not data:
        return data, False
    changed = False
    if tokens is None:
        tokens = locate.token_windows(data)
    if tokens:
        pieces = []
        last = 0
        for start, end in tokens:
            pieces.append(data[last:start])
            pieces.append(_TOKEN.sub(_keep_prefix, data[start:end]))
            last = end
        pieces.append(data[last:])
        masked = b"".join(pieces)
        changed = masked != data
        data = masked
    lowered = data.lower()
    if any(word in lowered for word in _KEY_WORDS):
        masked = _KEY_PARAM.sub(lambda m: m.group(1) + b"***", data)
        masked = _KEY_JSON.sub(lambda m: m.group(1) + b"***", masked)
        changed = changed or masked != data
        data = masked
    if b"PRIVATE KEY-----" in data:
        data = _PRIVATE_KEY_BODY.sub(lambda m: m.group(1) + b"***" + m.group(2), data)
        changed = True
    return data, changed


def mask_text(text: str) -> str:
    """Replace key-looking tokens and key=value secrets in free text."""
    if not text:
        return text
    masked, changed = mask_bytes(text.encode("utf-8", "surrogatepass"))
    return masked.decode("utf-8", "replace") if changed else text


def mask_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The same headers with credential values masked."""
    return [(name, mask_header_value(name, value)) for name, value in headers]


def headers_dict(masked: list[tuple[str, str]]) -> dict[str, str]:
    """Masked headers as the event's ``http_headers`` (names lower-cased, repeats joined)."""
    out: dict[str, str] = {}
    for name, value in masked:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out
