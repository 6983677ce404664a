"""HTTP/2 framing for the classifier: frames, HPACK header blocks (with the ``hpack``
library), per-stream reassembly, from the connection preface on.

We are neither client nor server, only a reader of one direction's bytes, so instead of
``h2``'s connection state machine (which insists on playing a role and answering) this
walks the frame layer itself and keeps one HPACK decoder per direction. Each stream
that ends (``END_STREAM``) becomes an :class:`~busted.classifier.http1.HttpMessage`
(``version="HTTP/2"``, pseudo-headers kept first so a text rendering reads like
``POST /v1/messages``), which the rest of the classifier treats like HTTP/1.1.

If capture started mid-connection the HPACK dynamic table is unknown: header blocks
that refer to it fail to decode, the stream's headers are then partial, and bodies are
still collected. Nothing here raises on bad input.
"""

from __future__ import annotations

import hpack

from busted.classifier.http1 import HttpMessage

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
FLAG_END_STREAM = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20
MAX_FRAME = 1 << 24
MAX_STREAMS = 256  # streams tracked per connection direction; the oldest go first


def looks_like_http2(data: bytes | bytearray, direction: str = "write") -> bool:
    """Does this start an HTTP/2 connection (client preface, or a server's SETTINGS)?"""
    if len(data) >= 3 and (data[:24] == PREFACE[: len(data[:24])]):
        return True
    if len(data) >= 9 and data[3] == SETTINGS and data[4] in (0, 1):
        length = int.from_bytes(data[:3], "big")
        stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        return stream == 0 and length % 6 == 0 and length <= 60 and len(data) >= 9 + length
    return False


class _Stream:
    __slots__ = ("headers", "body", "block", "ended", "truncated", "wire", "decoded")

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.block = bytearray()  # header block waiting for CONTINUATION frames
        self.ended = False
        self.truncated = False
        self.wire = 0
        self.decoded = False


class H2Parser:
    """Streaming HTTP/2 reader for one direction of one connection."""

    def __init__(self, max_body: int = 1024 * 1024, default_kind: str = "request") -> None:
        self.max_body = max_body
        # What a stream is when its headers could not be decoded: a client writes
        # requests, a client reads responses.
        self.default_kind = default_kind
        self._buf = bytearray()
        self._decoder = hpack.Decoder()
        # The peer's SETTINGS may allow a larger table than the default; we only read.
        self._decoder.max_allowed_table_size = 1 << 20
        self._streams: dict[int, _Stream] = {}
        self._preface_checked = False
        self.hpack_errors = 0
        self.broken = False  # framing made no sense: stop trusting this direction
        self.dropped = 0  # body bytes not kept because of max_body

    @property
    def in_message(self) -> bool:
        return bool(self._buf) or any(s.headers or s.body for s in self._streams.values())

    @property
    def buffered(self) -> int:
        return len(self._buf) + sum(len(s.body) for s in self._streams.values())

    def feed(self, data: bytes) -> list[HttpMessage]:
        """Add bytes; return the messages of streams that ended."""
        if self.broken:
            return []
        buf = self._buf
        buf += data
        pos = 0
        if not self._preface_checked:
            if len(buf) < 24 and PREFACE.startswith(bytes(buf)):
                return []
            if buf[:24] == PREFACE:
                pos = 24
            self._preface_checked = True
        out: list[HttpMessage] = []
        n = len(buf)
        while n - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            ftype = buf[pos + 3]
            if ftype > CONTINUATION + 10 or length >= MAX_FRAME:
                self.broken = True
                buf.clear()
                return out
            if n - pos - 9 < length:
                break
            flags = buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9 : pos + 9 + length])
            pos += 9 + length
            self._frame(ftype, flags, sid, payload, out)
        del buf[:pos]
        return out

    def flush(self) -> list[HttpMessage]:
        """End of input: the streams in progress, marked incomplete."""
        out = [
            self._message(sid, stream, complete=False)
            for sid, stream in self._streams.items()
            if stream.headers or stream.body
        ]
        self._streams.clear()
        self._buf.clear()
        return out

    # --- internals ------------------------------------------------------------------
    def _stream(self, sid: int) -> _Stream:
        stream = self._streams.get(sid)
        if stream is None:
            if len(self._streams) >= MAX_STREAMS:
                self._streams.pop(next(iter(self._streams)))
            stream = self._streams[sid] = _Stream()
        return stream

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes, out: list[HttpMessage]) -> None:
        if ftype == DATA:
            if sid == 0:
                return
            stream = self._stream(sid)
            data = _unpad(payload, flags)
            stream.wire += len(payload) + 9
            # One budget for all streams of the connection direction.
            room = self.max_body - sum(len(s.body) for s in self._streams.values())
            if room >= len(data):
                stream.body += data
            else:
                stream.body += data[: max(room, 0)]
                stream.truncated = True
                self.dropped += len(data) - max(room, 0)
            if flags & FLAG_END_STREAM:
                self._end(sid, stream, out)
        elif ftype in (HEADERS, PUSH_PROMISE):
            if sid == 0:
                return
            block = _unpad(payload, flags)
            if ftype == HEADERS and flags & FLAG_PRIORITY:
                block = block[5:]
            if ftype == PUSH_PROMISE:
                block = block[4:]
                stream = _Stream()  # decoded for the HPACK table's sake, then dropped
            else:
                stream = self._stream(sid)
                stream.wire += len(payload) + 9
                if flags & FLAG_END_STREAM:
                    stream.ended = True
            stream.block += block
            if flags & FLAG_END_HEADERS:
                self._decode(stream)
                if stream.ended and ftype == HEADERS:
                    self._end(sid, stream, out)
        elif ftype == CONTINUATION:
            stream = self._streams.get(sid)
            if stream is None:
                return
            stream.block += payload
            stream.wire += len(payload) + 9
            if flags & FLAG_END_HEADERS:
                self._decode(stream)
                if stream.ended:
                    self._end(sid, stream, out)
        elif ftype == RST_STREAM:
            stream = self._streams.pop(sid, None)
            if stream is not None and (stream.headers or stream.body):
                out.append(self._message(sid, stream, complete=False))

    def _decode(self, stream: _Stream) -> None:
        block = bytes(stream.block)
        stream.block.clear()
        try:
            decoded = self._decoder.decode(block, raw=True)
        except Exception:  # hpack raises several types; the table may be out of sync
            self.hpack_errors += 1
            return
        pairs = [(k.decode("latin-1"), v.decode("utf-8", "replace")) for k, v in decoded]
        if not stream.decoded:
            stream.headers = pairs
            stream.decoded = True
        # A second block on the same stream is trailers: nothing we need from it.

    def _end(self, sid: int, stream: _Stream, out: list[HttpMessage]) -> None:
        self._streams.pop(sid, None)
        out.append(self._message(sid, stream, complete=True))

    def _message(self, sid: int, stream: _Stream, complete: bool) -> HttpMessage:
        pseudo = {k: v for k, v in stream.headers if k.startswith(":")}
        regular = [(k, v) for k, v in stream.headers if not k.startswith(":")]
        kind = "response" if ":status" in pseudo else "request" if ":method" in pseudo else self.default_kind
        if kind == "response":
            status = pseudo.get(":status", "0")
            msg = HttpMessage(
                kind="response", status=int(status) if status.isascii() and status.isdigit() else 0
            )
        else:
            msg = HttpMessage(
                kind="request", method=pseudo.get(":method", ""), target=pseudo.get(":path", "")
            )
            if ":authority" in pseudo:
                regular.insert(0, (":authority", pseudo[":authority"]))
        msg.version = "HTTP/2"
        msg.headers = regular
        msg.body = bytes(stream.body)
        msg.complete = complete
        msg.truncated = stream.truncated or not complete
        msg.wire_bytes = stream.wire
        msg.stream_id = sid
        return msg


def _unpad(payload: bytes, flags: int) -> bytes:
    if flags & FLAG_PADDED and payload:
        pad = payload[0]
        return payload[1 : max(1, len(payload) - pad)]
    return payload


def parse_capture(data: bytes, direction: str = "write", max_body: int = 1024 * 1024) -> list[HttpMessage]:
    """All messages in one standalone capture, finished streams first."""
    parser = H2Parser(max_body, "request" if direction == "write" else "response")
    messages = parser.feed(data)
    return messages + parser.flush()
