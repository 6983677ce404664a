"""AWS event-stream framing (``application/vnd.amazon.eventstream``): how Bedrock streams
``converse-stream`` and ``invoke-with-response-stream`` responses.

Each message is ``total length | headers length | prelude CRC | headers | payload |
message CRC`` (big-endian 32-bit integers). The ``:event-type`` header names the event
(``contentBlockDelta``, ``metadata``, ``chunk``, ...); the payload is JSON. Converse
events come out as ``{event_type: payload}`` (the shape of the non-streamed API's
members), ``chunk`` events as the model's own JSON (base64 inside ``bytes``).

CRCs are not checked: a capture is what it is, and a damaged message is skipped by its
JSON failing to parse, never by raising.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

from busted.classifier import jsonparse

MAX_MESSAGES = 20000
# Sizes of fixed-width header value types (type code -> bytes); 6 and 7 are length-prefixed.
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def looks_like_eventstream(data: bytes) -> bool:
    if len(data) < 16:
        return False
    total = int.from_bytes(data[0:4], "big")
    headers = int.from_bytes(data[4:8], "big")
    return 16 <= total <= 16 * 1024 * 1024 and headers <= total - 16


def _event_type(headers: bytes) -> str:
    pos = 0
    n = len(headers)
    while pos < n:
        name_len = headers[pos]
        name = headers[pos + 1 : pos + 1 + name_len]
        pos += 1 + name_len
        if pos >= n:
            break
        kind = headers[pos]
        pos += 1
        if kind in (6, 7):
            size = int.from_bytes(headers[pos : pos + 2], "big")
            value = headers[pos + 2 : pos + 2 + size]
            pos += 2 + size
            if name == b":event-type":
                return value.decode("utf-8", "replace")
        elif kind in _FIXED:
            pos += _FIXED[kind]
        else:
            break  # unknown type: the rest cannot be walked
    return ""


def iter_eventstream(data: bytes) -> Iterator[tuple[str, Any]]:
    """Yield (event type, JSON object) for each message with a JSON payload."""
    pos = 0
    n = len(data)
    count = 0
    while n - pos >= 16 and count < MAX_MESSAGES:
        total = int.from_bytes(data[pos : pos + 4], "big")
        headers_len = int.from_bytes(data[pos + 4 : pos + 8], "big")
        if total < 16 or headers_len > total - 16:
            return
        end = min(pos + total, n)
        headers = data[pos + 12 : pos + 12 + headers_len]
        payload = data[pos + 12 + headers_len : end - 4 if end == pos + total else end]
        pos += total
        count += 1
        kind = _event_type(headers)
        obj = jsonparse.loads(payload) if payload[:1] == b"{" else None
        if not isinstance(obj, dict):
            continue
        if kind == "chunk" and isinstance(obj.get("bytes"), str):
            try:
                inner = jsonparse.loads(base64.b64decode(obj["bytes"], validate=False))
            except (binascii.Error, ValueError):
                continue
            if inner is not None:
                yield kind, inner
        elif kind:
            yield kind, {kind: obj}
        else:
            yield kind, obj
