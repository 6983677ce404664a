"""WebSocket (RFC 6455) connections in the classifier: frames -> messages -> events.

Agents talk to LLM APIs over WebSockets too: OpenAI Codex opens
``wss://api.openai.com/v1/responses`` first and sends each turn as a Responses API
``response.create`` message; the server streams ``response.*`` events back. After an
HTTP/1.1 ``101 Switching Protocols`` answering an ``Upgrade: websocket`` request, both
directions of the connection are frames, which :class:`WsParser` turns back into
messages: client frames are masked, payload lengths come in 7, 16 or 64 bits, a message
may be fragmented (with control frames in between), and with ``permessage-deflate``
(RFC 7692) its payload is raw DEFLATE whose window carries over from message to message
unless the handshake said ``*_no_context_takeover``.

What becomes an event:

- each client data message is one request: a JSON message is judged as if it were the
  body of a ``POST`` to the WebSocket's path on its host (so ``response.create`` is an
  LLM request with its provider, model and prompt, and JSON-RPC is MCP);
- server ``response.*`` events are gathered until the response ends
  (``response.completed`` / ``failed`` / ``incomplete`` / ``done``, or an ``error``) and
  judged together as one streamed answer (text, token usage); any other server message
  is judged alone.

The reassembler (:mod:`busted.classifier.reassembly`) calls :func:`on_http_message`
for every HTTP message it judged, switches a direction to a :class:`WsParser` once
:func:`is_active` says so, and judges its messages with :func:`classify`.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from busted.classifier.core import ConnContext, classify_message, classify_raw
from busted.classifier.http1 import HttpMessage

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DEFLATE_TAIL = b"\x00\x00\xff\xff"  # removed by the sender (RFC 7692 7.2.1)
_OVERSIZED = object()  # FrameDecoder._frame took part of a frame too large to keep

# The "type" of a server event, read from its first bytes (servers put it first).
_EVENT_TYPE = re.compile(rb'^\s*\{\s*"type"\s*:\s*"([A-Za-z0-9_.]+)"')
_RESPONSE_END = frozenset((b"response.completed", b"response.failed", b"response.incomplete",
                           b"response.done", b"response.cancelled", b"error"))


@dataclass
class Session:
    """What the opening handshake said; kept in ``ConnContext.websocket``."""

    path: str = "/"
    host: str = ""
    active: bool = False  # the server answered 101: frames from now on
    deflate: bool = False  # permessage-deflate was agreed
    client_no_takeover: bool = False
    server_no_takeover: bool = False


@dataclass(slots=True)
class WsMessage:
    """One message of one direction, or (server side) the events of one response."""

    kind: str  # "request" (client -> server) or "response"
    data: bytes  # the payload (decompressed); a grouped response: the events, one a line
    opcode: int = OP_TEXT
    events: int = 1  # messages gathered in this one
    truncated: bool = False  # cut (size cap, undecodable deflate, input ended)
    wire_bytes: int = 0  # frame bytes it took
    stream_id: int = 0  # (the reassembler's HTTP/2 field: never a stream here)


def is_active(ctx: ConnContext) -> bool:
    session = getattr(ctx, "websocket", None)
    return session is not None and session.active


def on_http_message(msg: HttpMessage, fields: dict[str, Any], ctx: ConnContext) -> None:
    """Follow the opening handshake: an ``Upgrade: websocket`` request opens a session,
    its ``101`` answer starts the frames. Both are plain HTTP, not the conversation:
    their fields are demoted to HTTP_REQUEST / HTTP_RESPONSE."""
    if (msg.header("upgrade") or "").strip().lower() != "websocket":
        return
    if msg.kind == "request":
        path = msg.target.split("?", 1)[0] or "/"
        ctx.websocket = Session(path=path, host=ctx.host)
        fields["content_class"] = "HTTP_REQUEST"
    elif msg.status == 101 and getattr(ctx, "websocket", None) is not None:
        session = ctx.websocket
        session.active = True
        _extensions(session, msg.header("sec-websocket-extensions") or "")
        fields["content_class"] = "HTTP_RESPONSE"
    else:
        return
    for key in ("llm_model", "llm_user_message", "llm_system_prompt", "llm_stream"):
        fields.pop(key, None)


def _extensions(session: Session, header: str) -> None:
    """permessage-deflate and its parameters, as the server accepted them."""
    for offer in header.split(","):
        params = [p.strip().lower() for p in offer.split(";")]
        if params and params[0] == "permessage-deflate":
            session.deflate = True
            session.client_no_takeover = "client_no_context_takeover" in params
            session.server_no_takeover = "server_no_context_takeover" in params
            return


class FrameDecoder:
    """Bytes of one direction -> whole data messages: ``(opcode, payload, truncated,
    wire bytes)``. Control frames are read and dropped; a message larger than
    ``max_message`` keeps its first ``max_message`` bytes and is marked truncated."""

    def __init__(self, deflate: bool = False, takeover: bool = True,
                 max_message: int = 1024 * 1024) -> None:
        self.deflate = deflate
        self.takeover = takeover
        self.max_message = max_message
        self._buf = bytearray()
        self._parts: list[bytes] = []  # fragments of the message in progress
        self._size = 0
        self._opcode: int | None = None  # of the message in progress
        self._compressed = False
        self._truncated = False
        self._wire = 0
        self._skip = 0  # payload bytes of an oversized frame still to throw away
        self._fin_pending = False  # ... and that frame ends its message
        self._skip_key = b""  # ... and its mask, turned to where the skipping is
        self._inflater = zlib.decompressobj(-15) if deflate else None
        self.errors = 0  # frames that broke the protocol (the stream was resynced)

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._size

    @property
    def in_message(self) -> bool:
        return bool(self._buf) or self._opcode is not None or self._skip > 0

    def feed(self, data: bytes) -> list[tuple[int, bytes, bool, int]]:
        out: list[tuple[int, bytes, bool, int]] = []
        if self._skip:
            drop = min(self._skip, len(data))
            room = max(0, self.max_message - self._size)
            if room:  # more of the oversized frame still fits
                self._add(_unmask(data[:min(drop, room)], self._skip_key))
                self._skip_key = _rotate(self._skip_key, min(drop, room))
            self._skip -= drop
            self._wire += drop
            data = data[drop:]
            if not self._skip and self._fin_pending:
                out.append(self._finish())
        self._buf += data
        while self._buf and not self._skip:
            frame = self._frame()
            if frame is None:
                break
            if frame is _OVERSIZED:
                if not self._skip and self._fin_pending:
                    out.append(self._finish())
                continue
            done = self._take(*frame)
            if done is not None:
                out.append(done)
        return out

    def _frame(self) -> tuple[int, bool, bool, bytes, int] | object | None:
        """The next whole frame (opcode, fin, rsv1, payload, frame size); None when
        more bytes are needed; _OVERSIZED when a too large frame was taken in part."""
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        length = b1 & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack_from(">H", buf, 2)
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack_from(">Q", buf, 2)
            pos = 10
        key = b""
        if b1 & 0x80:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos:pos + 4])
            pos += 4
        opcode, fin, rsv1 = b0 & 0x0F, bool(b0 & 0x80), bool(b0 & 0x40)
        if b0 & 0x30 or opcode in (3, 4, 5, 6, 7) or opcode > 0xA or (
                opcode >= 8 and (length > 125 or not fin)):
            # Not a frame (RSV2/RSV3 are never used here): the framing is lost. Drop
            # what is buffered; the next capture may begin a frame again.
            self.errors += 1
            self._buf.clear()
            if self._opcode is not None:
                self._truncated = True
            return None
        if length > self.max_message and opcode < 8:
            # Too large to keep: keep what fits of it, throw the rest away as it comes.
            have = min(len(buf) - pos, length)
            keep = min(have, max(0, self.max_message - self._size))
            payload = _unmask(bytes(buf[pos:pos + keep]), key)
            del buf[:pos + have]
            self._skip = length - have
            self._skip_key = _rotate(key, keep)
            self._truncated = True
            self._fin_pending = fin
            self._wire += pos + have
            self._start_or_continue(opcode, rsv1)
            self._add(payload)
            return _OVERSIZED
        if len(buf) < pos + length:
            return None
        payload = _unmask(bytes(buf[pos:pos + length]), key)
        del buf[:pos + length]
        return opcode, fin, rsv1, payload, pos + length

    def _start_or_continue(self, opcode: int, rsv1: bool) -> None:
        if opcode != OP_CONTINUATION:
            if self._opcode is not None:  # a new message before the last one ended
                self._truncated = True
                self._parts, self._size = [], 0
            self._opcode = opcode
            self._compressed = rsv1 and self.deflate
        elif self._opcode is None:  # a continuation of a message we never saw begin
            self._opcode = OP_BINARY
            self._truncated = True

    def _add(self, payload: bytes) -> None:
        room = self.max_message - self._size
        if len(payload) > room:
            payload = payload[:max(room, 0)]
            self._truncated = True
        if payload:
            self._parts.append(payload)
            self._size += len(payload)

    def _take(self, opcode: int, fin: bool, rsv1: bool, payload: bytes,
              size: int) -> tuple[int, bytes, bool, int] | None:
        if opcode >= 8:  # ping, pong, close: not part of any message
            return None
        self._wire += size
        self._start_or_continue(opcode, rsv1)
        self._add(payload)
        return self._finish() if fin else None

    def _finish(self) -> tuple[int, bytes, bool, int]:
        opcode = self._opcode if self._opcode is not None else OP_BINARY
        data = b"".join(self._parts)
        truncated = self._truncated
        if self._compressed:
            data, ok = self._inflate(data, truncated)
            truncated = truncated or not ok
        wire = self._wire
        self._parts, self._size, self._opcode = [], 0, None
        self._compressed = self._truncated = self._fin_pending = False
        self._wire = 0
        return opcode, data, truncated, wire

    def _inflate(self, data: bytes, cut: bool) -> tuple[bytes, bool]:
        if self._inflater is None or not self.takeover:
            self._inflater = zlib.decompressobj(-15)
        if cut:
            # Part of the message is missing: what was kept still inflates, but the
            # window the next messages rely on is gone.
            inflater, self._inflater = self._inflater, zlib.decompressobj(-15)
            try:
                return inflater.decompress(data, self.max_message), False
            except zlib.error:
                return b"", False
        try:
            out = self._inflater.decompress(data + _DEFLATE_TAIL, self.max_message)
        except zlib.error:
            self._inflater = zlib.decompressobj(-15)
            return b"", False
        if self._inflater.unconsumed_tail:  # larger than we keep: the window is lost too
            self._inflater = zlib.decompressobj(-15)
            return out, False
        return out, True


def _rotate(key: bytes, offset: int) -> bytes:
    """The mask for payload bytes that start ``offset`` bytes into a frame."""
    return key[offset % 4:] + key[:offset % 4] if key else key


def _unmask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key (one big-integer operation, not a byte loop)."""
    if not key or not payload:
        return payload
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


class WsParser:
    """The reassembler's parser for one direction of a WebSocket connection."""

    def __init__(self, kind: str, session: Session, max_message: int = 1024 * 1024) -> None:
        self.kind = kind
        takeover = not (session.client_no_takeover if kind == "request" else session.server_no_takeover)
        self.decoder = FrameDecoder(session.deflate, takeover, max_message)
        self.max_message = max_message
        self._group: list[bytes] = []  # events of the server response in progress
        self._group_size = 0
        self._group_wire = 0
        self._group_truncated = False

    @property
    def in_message(self) -> bool:
        return self.decoder.in_message or bool(self._group)

    @property
    def buffered(self) -> int:
        return self.decoder.buffered + self._group_size

    def feed(self, data: bytes) -> list[WsMessage]:
        out: list[WsMessage] = []
        for opcode, payload, truncated, wire in self.decoder.feed(data):
            kind = _event_type(payload) if self.kind == "response" and opcode == OP_TEXT else None
            if kind is not None and (kind.startswith(b"response.") or (kind == b"error" and self._group)):
                self._gather(payload, truncated, wire)
                if kind in _RESPONSE_END:
                    out.append(self._end_group(truncated=False))
                continue
            out.append(WsMessage(self.kind, payload, opcode, 1, truncated, wire))
        return out

    def flush(self) -> list[WsMessage]:
        """Input ended or went idle: the response gathered so far, cut short."""
        return [self._end_group(truncated=True)] if self._group else []

    def _gather(self, payload: bytes, truncated: bool, wire: int) -> None:
        self._group_wire += wire
        self._group_truncated |= truncated
        if self._group_size + len(payload) > self.max_message:
            self._group_truncated = True
            return
        # one event a line (JSON needs no raw newlines: any are whitespace)
        self._group.append(payload.replace(b"\n", b" ").replace(b"\r", b" "))
        self._group_size += len(payload) + 1

    def _end_group(self, truncated: bool) -> WsMessage:
        msg = WsMessage("response", b"\n".join(self._group), OP_TEXT, len(self._group),
                        truncated or self._group_truncated, self._group_wire)
        self._group, self._group_size, self._group_wire = [], 0, 0
        self._group_truncated = False
        return msg


def _event_type(payload: bytes) -> bytes | None:
    m = _EVENT_TYPE.match(payload, 0, 512) if payload[:1] in (b"{", b" ", b"\n") else None
    return m.group(1) if m else None


# --- judging ---------------------------------------------------------------------------


def classify(msg: WsMessage, ctx: ConnContext) -> dict[str, Any]:
    """Event fields of one message: judged as the HTTP body it stands for (a POST to the
    WebSocket's path for client messages, a streamed answer for server events)."""
    session = ctx.websocket if isinstance(ctx.websocket, Session) else Session()
    if msg.data.lstrip()[:1] not in (b"{", b"["):
        return classify_raw(msg.data, "write" if msg.kind == "request" else "read", ctx)
    if msg.kind == "request":
        stand_in = HttpMessage(
            kind="request", method="POST", target=session.path,
            headers=[("Host", session.host or ctx.host), ("Content-Type", "application/json")],
            body=msg.data, truncated=msg.truncated, wire_bytes=msg.wire_bytes)
    else:
        if msg.events > 1 or _event_type(msg.data) is not None:
            body = b"".join(b"data: " + line + b"\n\n" for line in msg.data.split(b"\n"))
            ctype = "text/event-stream"
        else:
            body, ctype = msg.data, "application/json"
        stand_in = HttpMessage(kind="response", status=200, reason="OK",
                               headers=[("Content-Type", ctype)], body=body,
                               truncated=msg.truncated, wire_bytes=msg.wire_bytes)
    fields = classify_message(stand_in, ctx)
    # What was sent is a WebSocket message: no HTTP head of the stand-in in the output.
    fields.pop("http_headers", None)
    payload = fields.get("tls_payload")
    if isinstance(payload, str):
        fields["tls_payload"] = payload.split("\r\n\r\n", 1)[-1]
    return fields
