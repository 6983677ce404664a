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
from collections.abc import KeysView

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
# NAME=value / NAME: value where the name says secret (env dumps pasted into prompts):
# AWS_SECRET_ACCESS_KEY=..., DB_PASSWORD: ..., GITHUB_TOKEN=...
_ASSIGNED = re.compile(
    rb"(?i)\b([A-Z0-9_]*(?:SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|ACCESS_KEY)[A-Z0-9_]*"
    rb"\s*[=:]\s*[\"']?)([^\s\"'*]{4})[^\s\"']+"
)
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


_checked: set[str] = set()  # header names (lower case) already judged
_secret: set[str] = set()  # ... and the ones among them that carry credentials


def is_secret_header(name: str) -> bool:
    """Does this header (lower-case name) carry a credential?"""
    return name in secret_names({name})


def secret_names(names: set[str] | KeysView[str]) -> set[str]:
    """The credential headers among these lower-case names (set operations: this runs
    for every message)."""
    new = names - _checked
    if new:
        for name in new:
            if name in SECRET_HEADERS or (_SECRET_NAME.search(name) is not None and "ratelimit" not in name):
                _secret.add(name)
        if len(_checked) < 8192:  # names are few in practice; never grow without bound
            _checked.update(new)
    return names & _secret


def mask_header_value(name: str, value: str) -> str:
    """The value to show for a header: credentials are replaced, the scheme kept."""
    if not is_secret_header(name.lower()):
        return value
    scheme, sep, _ = value.partition(" ")
    if sep and scheme.lower() in ("bearer", "basic", "token", "digest", "aws4-hmac-sha256"):
        return f"{scheme} {MASK}"
    return MASK


def _mask_piece(piece: bytes) -> bytes:
    piece = _TOKEN.sub(_keep_prefix, piece)
    if b"=" in piece:
        piece = _KEY_PARAM.sub(lambda m: m.group(1) + b"***", piece)
    if b"=" in piece or b":" in piece:
        piece = _ASSIGNED.sub(lambda m: m.group(1) + m.group(2) + b"***", piece)
    if b'"' in piece:
        piece = _KEY_JSON.sub(lambda m: m.group(1) + b"***", piece)
    return piece


def mask_bytes(data: bytes, tokens: list[tuple[int, int]] | None = None) -> tuple[bytes, bool]:
    """Replace key-looking tokens and key=value secrets; (masked, anything changed).

    Short inputs (a URL, a header, a prompt field) are scanned whole. In long ones
    (bodies) only the windows around runs of 20+ token characters are looked at
    (``tokens``, from :func:`locate.token_windows`, computed here if not given): a
    regular expression over a whole body would cost more than the rest of the
    classification. So a short password in a long body stays visible; keys do not.
    """
    if not data:
        return data, False
    if len(data) <= 512:
        masked = _mask_piece(data)
    else:
        if tokens is None:
            tokens = locate.token_windows(data)
        if not tokens:
            masked = data
        else:
            pieces = []
            last = 0
            for start, end in tokens:
                pieces.append(data[last:start])
                pieces.append(_mask_piece(data[start:end]))
                last = end
            pieces.append(data[last:])
            masked = b"".join(pieces)
    changed = masked != data
    if b"PRIVATE KEY-----" in masked:
        masked = _PRIVATE_KEY_BODY.sub(lambda m: m.group(1) + b"***" + m.group(2), masked)
        changed = True
    return masked, changed


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
