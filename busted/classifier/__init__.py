"""Classify captured plaintext: is it an LLM or MCP conversation, with whom, about what.

Public surface:

- :func:`classify` judges one standalone capture (what ``busted classify`` does);
- :class:`busted.classifier.reassembly.Reassembler` does the same for a live stream of
  captures, per connection (what the classify worker does).

Modules: :mod:`.http1` and :mod:`.http2` frame messages, :mod:`.body` undoes
content-encoding, :mod:`.core` turns a message into event fields with the help of
:mod:`.providers`, :mod:`.llm`, :mod:`.sse`, :mod:`.mcp`, :mod:`.sdk`, :mod:`.pii` and
:mod:`.redact`.
"""

from __future__ import annotations

from typing import Any

from busted.classifier import http2
from busted.classifier.core import ConnContext, classify_message, classify_raw
from busted.classifier.http1 import HttpMessage, RawChunk
from busted.classifier.http1 import parse_one as _parse_http1

__all__ = ["classify", "classify_unguarded", "ConnContext", "context_for"]


def context_for(sni: str | None = None, dst: str | None = None) -> ConnContext:
    """A connection context from what capture knows: the SNI and ``IP:PORT``."""
    ctx = ConnContext(sni=(sni or "").strip().lower())
    if dst:
        ip, sep, port = dst.rpartition(":")
        if sep and port.isascii() and port.isdigit():
            ctx.dst_ip, ctx.dst_port = ip.strip("[]"), int(port)
        else:
            ctx.dst_ip = dst
    return ctx


def classify(
    data: bytes, direction: str = "write", sni: str | None = None, dst: str | None = None
) -> dict[str, Any]:
    """Event fields for one capture (raw bytes of what one side sent). Never raises."""
    try:
        return classify_unguarded(bytes(data), direction, context_for(sni, dst))
    except Exception:  # the contract: any input gives an answer
        return {"content_class": "UNKNOWN", "classifier_confidence": 0.0}


def classify_unguarded(data: bytes, direction: str, ctx: ConnContext) -> dict[str, Any]:
    """:func:`classify` without its safety net, for tests and fuzzing: an exception
    here is a bug the net would hide."""
    if http2.looks_like_http2(data, direction):
        messages = http2.parse_capture(data, direction)
        if messages:
            ctx.http2 = True
            return classify_message(messages[0], ctx)
    item = _parse_http1(data)
    if isinstance(item, HttpMessage):
        return classify_message(item, ctx)
    return classify_raw(item.data if isinstance(item, RawChunk) else data, direction, ctx)
