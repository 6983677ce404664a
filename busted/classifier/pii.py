"""PII and secret detection in user-visible content (prompts, messages, tool arguments).

Each detector is a regular expression behind a cheap substring pre-check (most text has
no ``@``, no ``AKIA``, no ``-----BEGIN``), and the numeric ones are confirmed by a
checksum where one exists (Luhn for cards, mod-97 for IBANs) so order numbers and
timestamps do not raise alarms. Protocol headers are never scanned: the request's own
``Authorization`` is not a leak.
"""

from __future__ import annotations

import re

from busted.classifier import locate

MAX_SCAN = 256 * 1024  # bytes of content scanned per message

PII_TYPES = (
    "email",
    "phone",
    "ssn",
    "credit_card",
    "iban",
    "aws_access_key",
    "private_key",
    "github_token",
    "api_key",
    "jwt",
)

_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")
_SSN = re.compile(rb"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_PHONE = re.compile(
    rb"(?<![\w+])(?:"
    rb"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"  # +44 20 7946 0958
    rb"|\+\d{8,14}"  # +14155550123
    rb"|\(\d{3}\)[ ]?\d{3}[ .-]\d{4}"  # (415) 555-0123
    rb"|\d{3}[.-]\d{3}[.-]\d{4}"  # 415-555-0123
    rb")(?![\w-])"
)
_CARD = re.compile(rb"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(rb"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_AWS_KEY = re.compile(rb"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b")
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_GITHUB = re.compile(rb"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b")
# Provider keys: OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), Google (AIza), Groq (gsk_),
# Hugging Face (hf_), Slack (xox?-), Stripe (sk_live_), Perplexity (pplx-), Replicate (r8_),
# GitLab (glpat-), xAI (xai-).
_API_KEY = re.compile(
    rb"(?<![A-Za-z0-9_-])(?:"
    rb"sk-(?:proj-|ant-(?:api|admin)\d\d-|svcacct-)?[A-Za-z0-9_-]{20,}"
    rb"|AIza[0-9A-Za-z_-]{35}"
    rb"|gsk_[A-Za-z0-9]{40,}"
    rb"|hf_[A-Za-z0-9]{30,}"
    rb"|xox[abposr]-[A-Za-z0-9-]{10,}"
    rb"|[rs]k_live_[A-Za-z0-9]{20,}"
    rb"|pplx-[A-Za-z0-9]{40,}"
    rb"|r8_[A-Za-z0-9]{30,}"
    rb"|glpat-[A-Za-z0-9_-]{20,}"
    rb"|xai-[A-Za-z0-9]{40,}"
    rb")"
)
_JWT = re.compile(rb"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_CARD_PREFIXES = (
    "4",
    "51",
    "52",
    "53",
    "54",
    "55",
    "22",
    "23",
    "24",
    "25",
    "26",
    "27",
    "34",
    "37",
    "6011",
    "65",
    "35",
    "36",
    "30",
    "38",
    "62",
)


def _card_found(text: bytes) -> bool:
    for match in _CARD.finditer(text):
        digits = match.group().replace(b" ", b"").replace(b"-", b"").decode("ascii")
        plausible = 13 <= len(digits) <= 19 and digits.startswith(_CARD_PREFIXES)
        # len(set) > 1 skips runs of one digit (0000 0000 0000 0000 passes Luhn).
        if plausible and luhn_ok(digits) and len(set(digits)) > 1:
            return True
    return False


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28,
    "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26, "UA": 29,
}  # fmt: skip


def iban_ok(candidate: str) -> bool:
    iban = candidate.replace(" ", "")
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def _phone_found(text: bytes) -> bool:
    for match in _PHONE.finditer(text):
        digits = sum(48 <= ch <= 57 for ch in match.group())
        if 10 <= digits <= 15:
            return True
    return False


def _around(data: bytes, char: bytes, pad: int) -> bytes:
    """The text around each occurrence of ``char`` (e.g. every "@"), joined."""
    parts = []
    pos = data.find(char)
    while pos >= 0 and len(parts) < 256:
        parts.append(data[max(0, pos - pad) : pos + pad])
        pos = data.find(char, pos + 1)
    return b"\n".join(parts)


def _join(data: bytes, windows: list[tuple[int, int]]) -> bytes:
    if len(windows) == 1 and windows[0] == (0, len(data)):
        return data
    return b"\n".join(data[a:b] for a, b in windows)


def scan(
    content: str | bytes, tokens: list[tuple[int, int]] | None = None, mapped: bytes | None = None
) -> list[str]:
    """Names of the PII / secret kinds present in ``content`` (in PII_TYPES order).

    ``tokens`` and ``mapped`` are :func:`busted.classifier.locate.token_windows` and
    :func:`~busted.classifier.locate.classes` of the same bytes when the caller has them
    already (the masking code needs them too).
    """
    if not content:
        return []
    data = content.encode("utf-8", "replace") if isinstance(content, str) else content
    if len(data) > MAX_SCAN:
        data = data[:MAX_SCAN]
        tokens = mapped = None
    if mapped is None:
        mapped = locate.classes(data)
    found: list[str] = []
    if b"@" in data and _EMAIL.search(_around(data, b"@", 80)):
        found.append("email")
    digits = locate.digit_windows(data, mapped=mapped)
    if digits:
        near = _join(data, digits)
        if _phone_found(near):
            found.append("phone")
        if b"-" in near and _SSN.search(near):
            found.append("ssn")
        if _card_found(near):
            found.append("credit_card")
        if any(iban_ok(m.group().decode("ascii")) for m in _IBAN.finditer(near)):
            found.append("iban")
    if b"PRIVATE KEY" in data and _PRIVATE_KEY.search(data):
        found.append("private_key")
    if tokens is None:
        tokens = locate.token_windows(data, mapped=mapped)
    if tokens:
        near = _join(data, tokens)
        if _AWS_KEY.search(near):
            found.append("aws_access_key")
        if _GITHUB.search(near):
            found.append("github_token")
        if _API_KEY.search(near):
            found.append("api_key")
        if b"eyJ" in near and _JWT.search(near):
            found.append("jwt")
    found.sort(key=PII_TYPES.index)
    return found
