"""HTTP/1.x framing for the classifier: a streaming parser that turns the bytes of one
direction of a connection into whole messages.

It is fed capture chunks as they come (one ``SSL_write``/``SSL_read`` each) and yields a
:class:`HttpMessage` for every request or response that is complete: headers parsed,
body de-chunked (``Transfer-Encoding: chunked`` is decoded incrementally, so a long SSE
stream costs O(n), not O(n^2)), still content-encoded (gzip/deflate is undone later, by
:mod:`busted.classifier.body`, only when someone looks inside). Bytes that do not start
an HTTP message at a message boundary come back as :class:`RawChunk` so the caller can
try other shapes (HTTP/2, bare JSON, SSE continuations, junk).

Nothing here raises on bad input: malformed framing ends the message early and marks it
``truncated``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_METHODS = frozenset(
    (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"CONNECT", b"TRACE")
)
_MAX_HEADER_BYTES = 64 * 1024  # a header block larger than this is not HTTP we care about
_MAX_CHUNK_LINE = 1024
# A chunk-size line: hex digits only (int() would also take "-5", "+5" and "1_0"; a
# negative size once sent the chunk loop backwards forever), optional extensions.
_CHUNK_HEAD = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")


@dataclass(slots=True)
class HttpMessage:
    """One HTTP request or response (HTTP/1.x, or rebuilt from an HTTP/2 stream)."""

    kind: str  # "request" or "response"
    method: str = ""
    target: str = ""  # request target as sent (path + query, or absolute URL via a proxy)
    status: int = 0
    reason: str = ""
    version: str = "HTTP/1.1"
    # Header names as sent (for display) and values; look-ups go through `header()`.
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""  # transfer-decoded, still content-encoded
    complete: bool = True
    truncated: bool = False  # body (or headers) cut: cap reached, framing broke, input ended
    wire_bytes: int = 0  # bytes this message occupied on the wire (as far as seen)
    stream_id: int = 0  # HTTP/2 stream (0 for HTTP/1.x)
    head_text: str = ""  # the header lines as received (HTTP/1.x), for display
    _index: dict[str, str] | None = None

    def header_index(self) -> dict[str, str]:
        """Headers by lower-case name; repeated headers are joined by ", "."""
        if self._index is None:
            index: dict[str, str] = {}
            for key, value in self.headers:
                low = key.lower()
                index[low] = f"{index[low]}, {value}" if low in index else value
            self._index = index
        return self._index

    def header(self, name: str) -> str | None:
        """Value of a header by lower-case name."""
        return self.header_index().get(name)


@dataclass(slots=True)
class RawChunk:
    """Bytes that did not begin an HTTP/1 message where one could start."""

    data: bytes


def looks_like_http1(data: bytes | bytearray) -> bool:
    """Does this begin an HTTP/1 request or response (possibly cut short)?"""
    if data[:7] == b"HTTP/1." or (len(data) < 7 and b"HTTP/1.".startswith(bytes(data))):
        return True
    space = data.find(b" ", 0, 9)
    if space > 0:
        return bytes(data[:space]) in _METHODS
    # A capture shorter than the method itself: accept a prefix of a known method.
    head = bytes(data[:8])
    return bool(head) and len(head) < 8 and any(m.startswith(head) for m in _METHODS)


def _parse_head(block: bytes) -> HttpMessage | None:
    """Parse a start line and header lines (without the blank line)."""
    text = block.decode("latin-1")
    crlf = "\r\n" in text
    lines = text.split("\r\n") if crlf else text.split("\n")
    start = lines[0].rstrip("\r")
    parts = start.split(" ", 2)
    if start.startswith("HTTP/"):
        msg = HttpMessage(kind="response", version=parts[0])
        if len(parts) > 1 and parts[1].isascii() and parts[1].isdigit():
            msg.status = int(parts[1])
        if len(parts) > 2:
            msg.reason = parts[2]
    else:
        if len(parts) < 2 or parts[0].encode("latin-1", "replace") not in _METHODS:
            return None
        msg = HttpMessage(kind="request", method=parts[0], target=parts[1])
        if len(parts) > 2:
            msg.version = parts[2]
    # Comprehensions: this runs for every message, and a plain loop costs twice as much.
    parts = [line.partition(":") for line in lines[1:]]
    headers = [(name, value.strip()) for name, colon, value in parts if colon and name]
    msg.headers = headers
    index = {name.lower(): value for name, value in headers}
    if len(index) != len(headers):  # repeated header names: join their values
        index = {}
        for name, value in headers:
            low = name.lower()
            index[low] = f"{index[low]}, {value}" if low in index else value
    msg._index = index
    cut = text.find("\n")
    msg.head_text = text[cut + 1 :] if cut >= 0 else ""
    if not crlf and msg.head_text:
        msg.head_text = msg.head_text.replace("\n", "\r\n")
    return msg


def _find_head_end(buf: bytearray) -> tuple[int, int]:
    """Offset of the blank line ending the header block, and its length; (-1, 0) if none."""
    end = buf.find(b"\r\n\r\n", 0, _MAX_HEADER_BYTES)
    if end >= 0:
        return end, 4
    end = buf.find(b"\n\n", 0, _MAX_HEADER_BYTES)  # bare-LF senders exist (tests, scripts)
    if end >= 0:
        return end, 2
    return -1, 0


class Http1Parser:
    """Streaming HTTP/1.x parser for one direction of one connection."""

    def __init__(self, max_body: int = 1024 * 1024) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self._msg: HttpMessage | None = None  # message whose body is being read
        self._body = bytearray()
        self._mode = ""  # "length", "chunked", "close"
        self._remaining = 0  # "length": body bytes still due; "chunked": bytes of this chunk
        self._chunk_state = "size"  # size, data, crlf, trailer
        self._done = HttpMessage(kind="request")  # last body-less message finished
        self._detached = False  # the message in progress was handed out already
        self.dropped = 0  # body bytes not kept because of max_body

    @property
    def in_message(self) -> bool:
        """True when a message has started and is not complete yet."""
        return self._msg is not None or bool(self._buf)

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._body)

    def feed(self, data: bytes) -> list[HttpMessage | RawChunk]:
        """Add bytes; return the messages (and raw chunks) completed by them."""
        self._buf += data
        out: list[HttpMessage | RawChunk] = []
        while self._buf:
            if self._msg is None:
                if not looks_like_http1(self._buf):
                    out.append(RawChunk(bytes(self._buf)))
                    self._buf.clear()
                    break
                if not self._start_message():
                    if len(self._buf) > _MAX_HEADER_BYTES:
                        # No sane header block: hand it over raw and start afresh.
                        out.append(RawChunk(bytes(self._buf)))
                        self._buf.clear()
                    break  # headers not complete yet
                if self._msg is None:  # a message without body was finished right away
                    out.append(self._done)
                    continue
            if self._read_body():
                msg = self._finish(complete=True)
                if not self._detached:
                    out.append(msg)
                self._detached = False
            else:
                break
        return out

    @property
    def over_cap(self) -> bool:
        """The message in progress outgrew ``max_body`` and was not handed out yet."""
        return self._msg is not None and self._msg.truncated and not self._detached

    def detach(self) -> HttpMessage | None:
        """Hand out the message in progress now (head and body so far, truncated); the
        rest of its body is still framed, counted and skipped, never buffered."""
        msg = self._msg
        if msg is None or self._detached:
            return None
        self._detached = True
        body, self._body = bytes(self._body), bytearray()
        return HttpMessage(
            kind=msg.kind, method=msg.method, target=msg.target, status=msg.status, reason=msg.reason,
            version=msg.version, headers=msg.headers, body=body, complete=False, truncated=True,
            wire_bytes=msg.wire_bytes, _index=msg._index,
        )  # fmt: skip

    def peek(self) -> HttpMessage | None:
        """The message in progress as it stands (head and body so far), without
        consuming anything; None before its head is complete."""
        msg = self._msg
        if msg is None or self._detached:
            return None
        return HttpMessage(
            kind=msg.kind, method=msg.method, target=msg.target, status=msg.status, reason=msg.reason,
            version=msg.version, headers=msg.headers, body=bytes(self._body), complete=False,
            truncated=True, wire_bytes=msg.wire_bytes, _index=msg._index,
        )  # fmt: skip

    def flush(self) -> HttpMessage | RawChunk | None:
        """End of input (close, timeout, eviction): return what is in progress, if any."""
        if self._msg is not None and self._detached:
            self._finish(complete=False)
            self._detached = False
            self._buf.clear()
            return None
        if self._msg is not None:
            # A body delimited by the connection's end is complete when input ends.
            complete = self._mode == "close"
            msg = self._finish(complete=complete)
            msg.truncated = msg.truncated or not complete
            self._buf.clear()
            return msg
        if not self._buf:
            return None
        data = bytes(self._buf)
        self._buf.clear()
        if not looks_like_http1(data):
            return RawChunk(data)
        # Headers never completed: parse what is there.
        head = data.split(b"\r\n\r\n", 1)[0]
        msg = _parse_head(head)
        if msg is None:
            return RawChunk(data)
        msg.complete = False
        msg.truncated = True
        msg.wire_bytes = len(data)
        return msg

    # --- internals ------------------------------------------------------------------
    def _start_message(self) -> bool:
        end, sep = _find_head_end(self._buf)
        if end < 0:
            return False
        msg = _parse_head(bytes(self._buf[:end]))
        del self._buf[: end + sep]
        if msg is None:  # cannot happen after looks_like_http1, but never trust input
            msg = HttpMessage(kind="request", truncated=True)
        msg.wire_bytes = end + sep
        self._body = bytearray()
        self._mode, self._remaining = _body_mode(msg)
        self._chunk_state = "size"
        if self._mode == "":
            msg.complete = True
            self._done = msg
            self._msg = None
        else:
            self._msg = msg
        return True

    def _keep(self, data: bytes | bytearray) -> None:
        if self._detached:
            self.dropped += len(data)
            return
        room = self.max_body - len(self._body)
        if room >= len(data):
            self._body += data
        else:
            if room > 0:
                self._body += data[:room]
            self.dropped += len(data) - max(room, 0)
            assert self._msg is not None
            self._msg.truncated = True

    def _read_body(self) -> bool:
        """Consume body bytes from the buffer; True once the body is complete."""
        msg = self._msg
        assert msg is not None
        buf = self._buf
        if self._mode == "length":
            take = min(self._remaining, len(buf))
            self._keep(buf[:take])
            del buf[:take]
            msg.wire_bytes += take
            self._remaining -= take
            return self._remaining == 0
        if self._mode == "close":
            msg.wire_bytes += len(buf)
            self._keep(buf)
            buf.clear()
            return False
        return self._read_chunked(msg, buf)

    def _read_chunked(self, msg: HttpMessage, buf: bytearray) -> bool:
        pos = 0
        n = len(buf)
        done = False
        body = self._body
        while pos < n:
            state = self._chunk_state
            if state == "data":
                take = min(self._remaining, n - pos)
                self._keep(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = "crlf"
                continue
            if state == "crlf":
                if buf[pos : pos + 2] == b"\r\n":
                    pos += 2
                elif buf[pos : pos + 1] == b"\n":
                    pos += 1
                elif n - pos < 2 and buf[pos : pos + 1] == b"\r":
                    break  # the LF is in the next chunk
                self._chunk_state = "size"
                continue
            if state == "size":
                head = _CHUNK_HEAD.match(buf, pos)  # one C call per chunk: this is hot
                if head is not None:
                    pos = head.end()
                    size = int(head.group(1), 16)
                else:
                    # Not a chunk size line (yet): wait for the rest of it, or give up.
                    if buf.find(b"\n", pos, pos + _MAX_CHUNK_LINE) < 0 and n - pos < _MAX_CHUNK_LINE:
                        break
                    msg.truncated = True
                    pos = n
                    done = True
                    break
            else:  # trailer lines, up to the blank one
                line_end = buf.find(b"\n", pos, pos + _MAX_CHUNK_LINE)
                if line_end < 0:
                    if n - pos >= _MAX_CHUNK_LINE:
                        msg.truncated = True
                        pos = n
                        done = True
                    break
                line = buf[pos:line_end].strip()
                pos = line_end + 1
                if not line:
                    done = True
                    break
                continue
            if size == 0:
                self._chunk_state = "trailer"
                continue
            end = pos + size
            if buf[end : end + 2] == b"\r\n" and not self._detached and len(body) + size <= self.max_body:
                # The whole chunk is here (the usual case): take it in one step.
                body += buf[pos:end]
                pos = end + 2
                continue
            self._remaining = size
            self._chunk_state = "data"
        msg.wire_bytes += pos
        del buf[:pos]
        return done

    def _finish(self, complete: bool) -> HttpMessage:
        msg = self._msg
        assert msg is not None
        msg.body = bytes(self._body)
        msg.complete = complete
        self._msg = None
        self._body = bytearray()
        self._mode = ""
        return msg


def _body_mode(msg: HttpMessage) -> tuple[str, int]:
    """How the body of this message is delimited: ("", 0) for no body."""
    if msg.kind == "response" and (100 <= msg.status < 200 or msg.status in (204, 304)):
        return "", 0
    te = (msg.header("transfer-encoding") or "").lower()
    if "chunked" in te:
        return "chunked", 0
    cl = msg.header("content-length")
    if cl is not None:
        try:
            length = int(cl.split(",")[0].strip())
        except ValueError:
            length = -1
        if length > 0:
            return "length", length
        if length == 0:
            return "", 0
    if msg.kind == "request":
        return "", 0  # a request without a length has no body
    return "close", 0


def parse_one(data: bytes, max_body: int = 1024 * 1024) -> HttpMessage | RawChunk | None:
    """Parse the first message of a standalone capture, complete or not."""
    if looks_like_http1(data):
        # Fast path for the common case (whole head, body delimited by a length): no
        # streaming buffers, one slice.
        end = data.find(b"\r\n\r\n", 0, _MAX_HEADER_BYTES)
        if end > 0:
            msg = _parse_head(data[:end])
            if msg is not None:
                mode, length = _body_mode(msg)
                if mode in ("", "length"):
                    start = end + 4
                    body = data[start : start + length] if mode else b""
                    msg.truncated = len(body) < length
                    msg.complete = not msg.truncated
                    if len(body) > max_body:
                        body = body[:max_body]
                        msg.truncated = True
                    msg.body = body
                    msg.wire_bytes = start + len(body)
                    return msg
    parser = Http1Parser(max_body)
    for item in parser.feed(data):
        return item
    return parser.flush()
