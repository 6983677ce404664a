"""Streamed response bodies: server-sent events (OpenAI, Anthropic, Gemini ``alt=sse``,
Cohere, MCP Streamable HTTP) and newline-delimited JSON (Ollama).

Both come down to a sequence of (event name, JSON object) pairs; the caller hands each
to an accumulator. Cut-off streams are fine: a partial last line is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from busted.classifier import jsonparse

MAX_EVENTS = 20000  # beyond this a stream is summarised from what was seen


def looks_like_sse(text: str) -> bool:
    """Does this text start like an event stream?"""
    head = text.lstrip()[:16]
    return head.startswith(("data:", "event:", "id:", ": ", "retry:"))


def looks_like_ndjson(text: str) -> bool:
    head = text.lstrip()
    if not head.startswith("{"):
        return False
    first_nl = head.find("\n")
    return 0 < first_nl < len(head.rstrip()) and head[first_nl - 1 : first_nl].rstrip() in ("}", "")


def iter_sse(text: str) -> Iterator[tuple[str, Any]]:
    """Yield (event name, parsed data) for each SSE event whose data is JSON."""
    event = ""
    data: list[str] = []
    count = 0
    for line in text.splitlines():
        if not line:
            if data:
                parsed = _loads("\n".join(data))
                if parsed is not None:
                    yield event, parsed
                    count += 1
                    if count >= MAX_EVENTS:
                        return
            event = ""
            data = []
            continue
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
    if data:  # stream cut before its blank line
        parsed = _loads("\n".join(data))
        if parsed is not None:
            yield event, parsed


def iter_ndjson(text: str) -> Iterator[tuple[str, Any]]:
    for count, line in enumerate(text.splitlines()):
        if count >= MAX_EVENTS:
            return
        line = line.strip()
        if line.startswith("{"):
            parsed = _loads(line)
            if parsed is not None:
                yield "", parsed


def _loads(text: str) -> Any:
    if not text or text == "[DONE]" or text[0] not in "{[":
        return None
    return jsonparse.loads(text)
