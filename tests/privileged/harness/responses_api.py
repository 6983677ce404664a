"""A fake OpenAI Responses API (``/v1/responses``), the way Codex talks to it.

- ``POST /v1/responses``: the answer streamed as Server-Sent Events (``response.created``
  ... ``response.output_text.delta`` ... ``response.completed`` with token usage);
- ``GET /v1/responses`` with ``Upgrade: websocket``: a 101, then a WebSocket session
  (RFC 6455; ``permessage-deflate`` with context takeover when the client offers it, as
  the real server does) where each client ``response.create`` message is answered by the
  same events, one text message each.

Each WebSocket message the client sends is recorded on the server as a request
(method ``"WS"``) so tests see what reached the server whichever way it came. The
answer's text names the request (:func:`fake_apis.answer_for`), as for the other fakes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import struct
import time
import zlib
from typing import TYPE_CHECKING

from .http_server import Request, Response

if TYPE_CHECKING:
    from .http_server import HttpServer

USAGE = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 0},
         "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0},
         "total_tokens": 1209}
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def answer_text(body: bytes) -> str:
    return f"Fake answer {hashlib.sha1(body).hexdigest()[:12]} from the test server."


def events(model: str, text: str) -> list[dict]:
    """The stream of one answer, as the Responses API sends it."""
    rid, mid = "resp_test", "msg_test"
    now = int(time.time())
    base = {"id": rid, "object": "response", "created_at": now, "model": model,
            "output": [], "usage": None}
    message = {"id": mid, "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": text, "annotations": []}]}
    kinds = [
        {"type": "response.created", "response": {**base, "status": "in_progress"}},
        {"type": "response.in_progress", "response": {**base, "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**message, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "item_id": mid, "output_index": 0,
         "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "item_id": mid, "output_index": 0,
         "content_index": 0, "delta": text},
        {"type": "response.output_text.done", "item_id": mid, "output_index": 0,
         "content_index": 0, "text": text},
        {"type": "response.content_part.done", "item_id": mid, "output_index": 0,
         "content_index": 0, "part": message["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": {**base, "status": "completed",
                                                    "output": [message], "usage": USAGE}},
    ]
    return [{**kind, "sequence_number": i} for i, kind in enumerate(kinds)]


def _model(body: bytes) -> str:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return "gpt-test"
    return value.get("model", "gpt-test") if isinstance(value, dict) else "gpt-test"


def responses(request: Request) -> Response:
    """The route for ``/v1/responses``: SSE for a POST, a WebSocket for an upgrade."""
    if request.headers.get("upgrade", "").lower() == "websocket":
        return _upgrade(request)
    text = request.answer = answer_text(request.body)
    stream = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()
              for e in events(_model(request.body), text)]
    return Response(200, [("content-type", "text/event-stream"), ("x-request-id", "req_test")],
                    stream=stream)


def _upgrade(request: Request) -> Response:
    key = request.headers.get("sec-websocket-key", "")
    accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
    deflate = "permessage-deflate" in request.headers.get("sec-websocket-extensions", "")
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Accept", accept)]
    if deflate:
        headers.append(("Sec-WebSocket-Extensions", "permessage-deflate"))
    request.answer = "(websocket)"
    session = _Session(request, deflate)
    return Response(101, headers, upgrade=session.serve)


class _Session:
    """One WebSocket connection: read client messages, answer each response.create."""

    def __init__(self, handshake: Request, deflate: bool) -> None:
        self.handshake = handshake
        self.deflate = deflate
        self.inflater = zlib.decompressobj(-15)
        self.deflater = zlib.compressobj(wbits=-15)

    def serve(self, conn: socket.socket, rfile: io.BufferedReader, server: HttpServer) -> None:
        parts: list[bytes] = []
        compressed = False
        while True:
            head = rfile.read(2)
            if len(head) < 2:
                return
            opcode, fin, rsv1 = head[0] & 0x0F, head[0] & 0x80, head[0] & 0x40
            length = head[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", rfile.read(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", rfile.read(8))
            key = rfile.read(4) if head[1] & 0x80 else b""
            payload = bytearray(rfile.read(length))
            for i in range(len(payload)) if key else ():
                payload[i] ^= key[i % 4]
            if opcode == 0x8:  # close: answer it and end
                self._send(conn, 0x8, bytes(payload[:2]), compress=False)
                return
            if opcode == 0x9:
                self._send(conn, 0xA, bytes(payload), compress=False)
                continue
            if opcode >= 0x8:
                continue
            if opcode != 0:
                parts, compressed = [], bool(rsv1) and self.deflate
            parts.append(bytes(payload))
            if not fin:
                continue
            message = b"".join(parts)
            if compressed:
                message = self.inflater.decompress(message + b"\x00\x00\xff\xff")
            self._on_message(conn, message, server)

    def _on_message(self, conn: socket.socket, message: bytes, server: HttpServer) -> None:
        request = Request("WS", self.handshake.path, dict(self.handshake.headers), message,
                          self.handshake.sni, self.handshake.peer)
        try:
            obj = json.loads(message)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("type") == "response.create":
            request.answer = answer_text(message)
            server.record(request)
            for event in events(obj.get("model", "gpt-test"), request.answer):
                self._send(conn, 0x1, json.dumps(event).encode())
        else:
            server.record(request)

    def _send(self, conn: socket.socket, opcode: int, payload: bytes, compress: bool = True) -> None:
        first = 0x80 | opcode
        if compress and self.deflate:
            packed = self.deflater.compress(payload) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
            payload, first = packed[:-4], first | 0x40
        n = len(payload)
        if n < 126:
            head = bytes([first, n])
        elif n < 65536:
            head = bytes([first, 126]) + struct.pack(">H", n)
        else:
            head = bytes([first, 127]) + struct.pack(">Q", n)
        conn.sendall(head + payload)
