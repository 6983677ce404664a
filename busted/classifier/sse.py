"""Streamed response bodies: server-sent events (OpenAI, Anthropic, Gemini ``alt=sse``,
Cohere, MCP Streamable HTTP) and newline-delimited JSON (Ollama).

Both come down to a sequence of (event name, JSON object) pairs; the caller hands each
to an accumulator. Cut-off streams are fine: a partial last line is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


def iter_sse(text: str, want: Callable[[str], bool] | None = None) -> Iterator[tuple[str, Any]]:
    """Yield (event name, parsed data) for each SSE event whose data is JSON.

    ``want(data)`` can skip events before their JSON is parsed (a long stream whose
    preview is complete only needs its usage totals). A stream cut before its last
    blank line still yields its last event."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    count = 0
    # Split on blank lines in C, then look inside each event: the usual shapes
    # ("data: {...}" and "event: x\ndata: {...}") take the short paths.
    for block in text.split("\n\n"):
        if not block:
            continue
        event = ""
        if block.startswith("event:"):
            nl = block.find("\n")
            if nl < 0:
                continue
            event = block[6:nl].strip()
            block = block[nl + 1 :]
        if block.startswith("data:") and "\n" not in block:
            data = block[5:]
        else:
            lines = []
            for line in block.split("\n"):
                if line.startswith("data:"):
                    lines.append(line[5:])
                elif line.startswith("event:"):
                    event = line[6:].strip()
            if not lines:
                continue
            data = "\n".join(lines)
        data = data.strip()
        if want is not None and not want(data):
            continue
        parsed = _loads(data)
        if parsed is not None:
            yield event, parsed
            count += 1
            if count >= MAX_EVENTS:
                return


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
