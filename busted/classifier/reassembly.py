"""Stateful reassembly of captures into messages, per connection and direction.

Capture hands over one event per ``SSL_write``/``SSL_read`` (or socket call); an HTTP
request or a streamed response usually spans several. The :class:`Reassembler` keeps,
per ``(pid, conn_id)``, a :class:`~busted.classifier.core.ConnContext` and one parser
per direction (HTTP/1.x, or HTTP/2 once a preface or a SETTINGS frame is seen), and
turns every completed message into ONE classified event: the fields of the first
capture of that message (process, connection, timestamp), the classification, the
masked ``tls_payload`` text and the message's ``bytes``, without ``payload``.

Messages still open are emitted when their connection closes, when they have been idle
for ``idle_timeout_s`` (a stream that never ends, a body that never comes), or when
memory must be given back: each connection holds at most ``max_conn_bytes`` and all of
them together at most ``max_total_bytes``; beyond that the least recently used
connections are flushed and forgotten, and the stats say how much was evicted.

It also decides when a connection is clearly not LLM / MCP traffic (its first message
is plain HTTP to a host no provider uses), so capture can stop copying its payload.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from busted.classifier import http2, websocket
from busted.classifier.core import ConnContext, classify_message, classify_raw
from busted.classifier.http1 import Http1Parser, HttpMessage, RawChunk
from busted.classifier.providers import OLLAMA_PORT, provider_for_host

Event = dict[str, Any]
IDLE_TIMEOUT_S = 5.0  # an open message silent this long is emitted as it is
FORGET_AFTER_S = 600.0  # a connection silent this long (no close seen) is forgotten
_INTERESTING_PATHS = ("/v1/", "/api/", "/mcp", "/sse", "/openai/", "/model/", "/models/", "/v1beta/")


class _Direction:
    __slots__ = ("parser", "template", "truncated", "last", "resync")

    def __init__(self) -> None:
        self.parser: Http1Parser | http2.H2Parser | None = None
        self.template: Event | None = None  # the first capture of the message in progress
        self.truncated = False
        self.last = 0.0
        # After a cut capture the rest of that body still arrives: skip it until a
        # new message starts, rather than emitting each piece as UNKNOWN.
        self.resync = False


class _Conn:
    __slots__ = ("key", "ctx", "dirs", "verdict_sent", "judged", "last")

    def __init__(self, key: tuple[Any, Any], ctx: ConnContext) -> None:
        self.key = key
        self.ctx = ctx
        self.dirs: dict[str, _Direction] = {}
        self.verdict_sent = False
        self.judged = False  # the first message has been looked at for a verdict
        self.last = 0.0

    def buffered(self) -> int:
        return sum(d.parser.buffered for d in self.dirs.values() if d.parser is not None)


class Reassembler:
    """Captures in, classified message events out."""

    def __init__(
        self,
        max_conn_bytes: int = 1024 * 1024,
        max_total_bytes: int = 64 * 1024 * 1024,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        stats: Counter[str] | None = None,
    ) -> None:
        self.max_conn_bytes = max_conn_bytes
        self.max_total_bytes = max_total_bytes
        self.idle_timeout_s = idle_timeout_s
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self._conns: OrderedDict[tuple[Any, Any], _Conn] = OrderedDict()
        self._total = 0  # bytes buffered over all connections (kept up to date per feed)
        self.verdicts: list[tuple[Any, Any]] = []  # (pid, conn_id) judged uninteresting
        # Sequence number given to what we emit: that of the capture (or close) that
        # completed it, so output sees numbers in order; the captures merged into it
        # leave gaps that ``stats["merged"]`` accounts for.
        self._seq: Any = None

    # --- input ----------------------------------------------------------------------
    def feed(self, event: Event, now: float) -> list[Event]:
        """Take one capture event (with ``payload``); return finished message events."""
        payload = _as_bytes(event.get("payload"))
        stats = self.stats
        stats["captures"] += 1
        stats["merged"] += 1  # taken back by each event emitted
        seq = event.get("seq")
        if seq is not None:
            self._seq = seq
        direction = event.get("direction")
        if direction != "read" and direction != "write":
            direction = "read" if "READ" in str(event.get("event_type", "")) else "write"
        key = (event.get("pid"), event.get("conn_id"))
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = _Conn(key, ConnContext())
            _update_ctx(conn.ctx, event)
        else:
            self._conns.move_to_end(key)
            if not conn.ctx.sni:  # the SNI may come with a later capture
                _update_ctx(conn.ctx, event)
        conn.last = now
        side = conn.dirs.get(direction)
        if side is None:
            side = conn.dirs[direction] = _Direction()
        side.last = now
        if side.template is None:
            side.template = event
        truncated = event.get("truncated")
        if truncated:
            side.truncated = True
        # Only this direction changes here: account for it alone.
        before = side.parser.buffered if side.parser is not None else 0
        out: list[Event] = []
        self._parse(conn, side, direction, event, payload, out)
        if truncated and side.parser is not None and side.parser.in_message:
            # The kernel copied less than was sent: lengths no longer add up, so the
            # framing of what follows is lost. Emit what we have and start afresh.
            self._flush_side(conn, side, direction, out, reason="truncated_captures")
            side.resync = not conn.ctx.http2
        parser = side.parser
        if parser is not None:
            held = parser.buffered
            if isinstance(parser, Http1Parser) and parser.over_cap:
                # A message larger than the per-connection cap: emit its head and the
                # body so far now; the parser skips the rest without keeping it.
                stats["conn_cap_flushes"] += 1
                stats["evicted_bytes"] += held
                msg = parser.detach()
                if msg is not None:
                    self._emit(conn, side, direction, msg, out)
            elif held > self.max_conn_bytes:
                stats["evicted_bytes"] += held
                self._flush_side(conn, side, direction, out, reason="conn_cap_flushes")
        after = side.parser.buffered if side.parser is not None else 0
        self._total += after - before
        if self._total > self.max_total_bytes:
            self._evict(out)
        return out

    def peek(self, pid: Any, conn_id: Any, direction: str = "write") -> Event | None:
        """An event for the HTTP/1 request still in progress on a connection, as it stands
        (head and body so far; ``truncated``), or None. Nothing is consumed: the
        complete message still comes out of :meth:`feed` later. Used to judge a held
        write that sends one piece of a request (agents write a large body in several
        calls): its policy decision need not wait for the last piece."""
        conn = self._conns.get((pid, conn_id))
        side = conn.dirs.get(direction) if conn is not None else None
        parser = side.parser if side is not None else None
        if not isinstance(parser, Http1Parser):
            return None
        msg = parser.peek()
        if msg is None or msg.kind != "request":
            return None
        try:
            fields = classify_message(msg, conn.ctx)
        except Exception as exc:  # a classifier bug must not stop the answer
            self.stats[f"classify_error_{type(exc).__name__}"] += 1
            return None
        self.stats["merged"] += 1  # _event takes one back: a peek merges nothing
        event = self._event(side, fields, msg.wire_bytes, True)
        self.stats["peeks"] += 1
        return event

    def close(self, pid: Any, conn_id: Any, seq: Any = None) -> list[Event]:
        """The connection closed: emit what it still holds and forget it."""
        if seq is not None:
            self._seq = seq
        conn = self._conns.pop((pid, conn_id), None)
        out: list[Event] = []
        if conn is not None:
            self._total -= conn.buffered()
            self._drain(conn, out, reason="")
        return out

    def expire(self, now: float) -> list[Event]:
        """Emit messages idle for longer than the timeout; forget silent connections."""
        out: list[Event] = []
        for key, conn in list(self._conns.items()):
            before = conn.buffered()
            for direction, side in conn.dirs.items():
                if (
                    side.parser is not None
                    and side.parser.in_message
                    and now - side.last > self.idle_timeout_s
                ):
                    self._flush_side(conn, side, direction, out, reason="idle_flushes")
            if now - conn.last > FORGET_AFTER_S:
                self._drain(conn, out, reason="")
                del self._conns[key]
            self._total += conn.buffered() - before
        return out

    def flush_all(self) -> list[Event]:
        out: list[Event] = []
        for conn in self._conns.values():
            self._drain(conn, out, reason="")
        self._conns.clear()
        self._total = 0
        return out

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def buffered_bytes(self) -> int:
        return self._total

    # --- internals --------------------------------------------------------------------
    def _parse(
        self, conn: _Conn, side: _Direction, direction: str, event: Event, payload: bytes, out: list[Event]
    ) -> None:
        if side.parser is None:
            if websocket.is_active(conn.ctx):
                side.parser = self._ws_parser(conn, direction)
            elif conn.ctx.http2 or http2.looks_like_http2(payload, direction):
                conn.ctx.http2 = True
                side.parser = http2.H2Parser(
                    self.max_conn_bytes, "request" if direction == "write" else "response"
                )
            else:
                side.parser = Http1Parser(self.max_conn_bytes)
        for item in side.parser.feed(payload):
            if isinstance(item, RawChunk):
                if websocket.is_active(conn.ctx) and isinstance(side.parser, Http1Parser):
                    # the 101 was answered: from here on this direction is frames
                    side.parser = self._ws_parser(conn, direction)
                    for msg in side.parser.feed(item.data):
                        self._emit(conn, side, direction, msg, out)
                        side.template = event
                    continue
                if not conn.judged and http2.looks_like_http2(item.data, direction):
                    conn.ctx.http2 = True
                    side.parser = http2.H2Parser(
                        self.max_conn_bytes, "request" if direction == "write" else "response"
                    )
                    for msg in side.parser.feed(item.data):
                        self._emit(conn, side, direction, msg, out)
                        side.template = event
                    continue
                if side.resync:
                    self.stats["resync_skipped_bytes"] += len(item.data)
                    continue
                self._emit_raw(conn, side, direction, item.data, out)
            else:
                side.resync = False
                self._emit(conn, side, direction, item, out)
            side.template = event  # what follows in this capture starts with it
        if not side.parser.in_message:
            side.template = None
            side.truncated = False

    def _emit(
        self, conn: _Conn, side: _Direction, direction: str, msg: HttpMessage | websocket.WsMessage,
        out: list[Event],
    ) -> None:
        try:
            if msg.stream_id and msg.kind == "response":
                _recall_stream(conn.ctx, msg.stream_id)
            if isinstance(msg, websocket.WsMessage):
                fields = websocket.classify(msg, conn.ctx)
            else:
                fields = classify_message(msg, conn.ctx)
                websocket.on_http_message(msg, fields, conn.ctx)
            if msg.stream_id and msg.kind == "request":
                _remember_stream(conn.ctx, msg.stream_id)
        except Exception as exc:  # a classifier bug must not lose the event
            self.stats[f"classify_error_{type(exc).__name__}"] += 1
            fields = {"content_class": "UNKNOWN", "classifier_confidence": 0.0}
        self.stats["messages"] += 1
        if msg.truncated:
            self.stats["truncated_messages"] += 1
        out.append(self._event(side, fields, msg.wire_bytes, msg.truncated))
        self._judge(conn, msg if isinstance(msg, HttpMessage) else None, fields)

    def _ws_parser(self, conn: _Conn, direction: str) -> websocket.WsParser:
        kind = "request" if direction == "write" else "response"
        return websocket.WsParser(kind, conn.ctx.websocket, self.max_conn_bytes)

    def _emit_raw(self, conn: _Conn, side: _Direction, direction: str, data: bytes, out: list[Event]) -> None:
        try:
            fields = classify_raw(data, direction, conn.ctx)
        except Exception as exc:
            self.stats[f"classify_error_{type(exc).__name__}"] += 1
            fields = {"content_class": "UNKNOWN", "classifier_confidence": 0.0}
        self.stats["raw_chunks"] += 1
        out.append(self._event(side, fields, len(data), False))
        self._judge(conn, None, fields)

    def _event(self, side: _Direction, fields: dict[str, Any], size: int, truncated: bool) -> Event:
        template = side.template or {}
        event = {k: v for k, v in template.items() if k != "payload"}
        event.update(fields)
        event["bytes"] = size
        if self._seq is not None:
            event["seq"] = self._seq
        self.stats["merged"] -= 1
        if truncated or side.truncated:
            event["truncated"] = True
        return event

    def _judge(self, conn: _Conn, msg: HttpMessage | None, fields: dict[str, Any]) -> None:
        """Verdict on the connection's first message: is it clearly not LLM / MCP?"""
        if conn.judged:
            return
        conn.judged = True
        cls = fields.get("content_class")
        ctx = conn.ctx
        if cls not in ("HTTP_REQUEST", "UNKNOWN") or conn.verdict_sent:
            return
        host = ctx.sni or ctx.host
        if provider_for_host(host) or ctx.dst_port == OLLAMA_PORT or ctx.mcp:
            return
        if msg is not None and msg.kind == "request":
            path = msg.target.split("?", 1)[0]
            if path.startswith(_INTERESTING_PATHS) or msg.header("upgrade"):
                return  # could be a model server's health check before the real calls
        elif cls == "UNKNOWN" and ctx.http2:
            return
        conn.verdict_sent = True
        self.verdicts.append(conn.key)
        self.stats["verdicts"] += 1

    def _flush_side(
        self, conn: _Conn, side: _Direction, direction: str, out: list[Event], reason: str
    ) -> None:
        parser = side.parser
        if parser is None:
            return
        if reason:
            self.stats[reason] += 1
        if isinstance(parser, (http2.H2Parser, websocket.WsParser)):
            for msg in parser.flush():
                self._emit(conn, side, direction, msg, out)
        else:
            item = parser.flush()
            if isinstance(item, HttpMessage):
                self._emit(conn, side, direction, item, out)
            elif isinstance(item, RawChunk):
                self._emit_raw(conn, side, direction, item.data, out)
            # A fresh parser has no stale framing state (HTTP/2 keeps its parser: the
            # HPACK table lives there).
            side.parser = None
        side.template = None
        side.truncated = False

    def _drain(self, conn: _Conn, out: list[Event], reason: str) -> None:
        for direction, side in conn.dirs.items():
            if side.parser is not None and side.parser.in_message:
                self._flush_side(conn, side, direction, out, reason)

    def _evict(self, out: list[Event]) -> None:
        target = self.max_total_bytes * 9 // 10
        while self._total > target and self._conns:
            key, conn = self._conns.popitem(last=False)  # least recently used first
            held = conn.buffered()
            self.stats["evicted_connections"] += 1
            self.stats["evicted_bytes"] += held
            self._total -= held
            self._drain(conn, out, reason="")
        if not self._conns:
            self._total = 0


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):  # a replayed JSON event
        return payload.encode("utf-8", "surrogateescape")
    if isinstance(payload, list):
        try:
            return bytes(payload)
        except (TypeError, ValueError):
            return b""
    return b""


def _update_ctx(ctx: ConnContext, event: Event) -> None:
    sni = event.get("sni")
    if sni and isinstance(sni, str) and not ctx.sni:
        ctx.sni = sni.strip().lower()
    if not ctx.dst_port:
        port = event.get("dst_port")
        if isinstance(port, int):
            ctx.dst_port = port
        ip = event.get("dst_ip")
        if isinstance(ip, str):
            ctx.dst_ip = ip


# HTTP/2 multiplexes: a response must be judged with the request of its own stream.
def _remember_stream(ctx: ConnContext, stream_id: int) -> None:
    if len(ctx.streams) > 256:
        ctx.streams.pop(next(iter(ctx.streams)))
    ctx.streams[stream_id] = (ctx.provider, ctx.endpoint, ctx.model, ctx.stream, ctx.mcp, ctx.mcp_method)


def _recall_stream(ctx: ConnContext, stream_id: int) -> None:
    saved = ctx.streams.get(stream_id)
    if saved:
        ctx.provider, ctx.endpoint, ctx.model, ctx.stream, ctx.mcp, ctx.mcp_method = saved
