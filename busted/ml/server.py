"""A local TLS server that answers like the LLM providers, and like ordinary web services,
with seeded timing: the other end of the behavioural model's training traffic
(:mod:`busted.ml.gather`) and of its privileged test.

- ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic): with
  ``"stream": true`` an SSE answer sent as the providers send it (one chunk per write,
  chunked transfer encoding), the first token after ``ttfb`` seconds, then ``tokens``
  tokens at ``rate`` tokens per second (1-3 tokens per chunk, jittered gaps); otherwise
  one JSON answer after the whole generation time.
- ``GET /api/items/N``: a small JSON document after a short, random service time.
- ``GET /blob/N``: N bytes at once (a download).
- ``GET /ws``: a WebSocket upgrade, then each client frame is answered by 1-4 small
  frames a few milliseconds apart (chat-like chatter that is not an LLM).

Timing per request comes from the request itself (``x-busted-rate``, ``x-busted-ttfb``,
``x-busted-tokens`` headers or the same keys in the JSON body's ``metadata``), so the
client side, which is seeded, decides it.
"""

from __future__ import annotations

import json
import random
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WORDS = ("the", "model", "kernel", "probe", "stream", "token", "answer", "eBPF", "socket",
         "policy", "agent", "quietly", "returns", "a", "haiku", "about", "packets", ",", ".")


def _gaps(rng: random.Random, rate: float, n: int) -> list[float]:
    """n inter-chunk delays around 1/rate with ~30 % jitter (gamma, shape 10)."""
    mean = 1.0 / max(rate, 1e-3)
    return [rng.gammavariate(10.0, mean / 10.0) for _ in range(n)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> dict:
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            doc = {}
        return doc if isinstance(doc, dict) else {}

    def _params(self, body: dict) -> tuple[float, float, int, random.Random]:
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}

        def pick(name: str, default: float) -> float:
            value = self.headers.get(f"x-busted-{name}") or meta.get(name)
            try:
                return float(value) if value is not None else default
            except ValueError:
                return default

        rng = random.Random(int(pick("seed", 0)))
        return pick("rate", 50.0), pick("ttfb", 0.5), int(pick("tokens", 60)), rng

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?")[0]
        if path.startswith("/api/items/"):
            rng = random.Random(path)
            time.sleep(rng.uniform(0.002, 0.08))
            items = [{"id": i, "name": rng.choice(WORDS), "price": rng.randint(1, 999)}
                     for i in range(rng.randint(1, 40))]
            self._send(200, json.dumps({"items": items}).encode())
        elif path.startswith("/blob/"):
            size = min(int(path.rsplit("/", 1)[1] or 0), 256 << 20)
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(size))
            self.end_headers()
            block = b"\0" * 65536
            left = size
            while left > 0:
                self.wfile.write(block[: min(left, len(block))])
                left -= len(block)
            self.wfile.flush()
        elif path == "/ws":
            self._websocket()
        else:
            self._send(404, b'{"error":"not found"}')

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):
            self._llm(body, anthropic=False)
        elif path.endswith("/messages"):
            self._llm(body, anthropic=True)
        elif path.startswith("/api/"):
            time.sleep(random.Random(path).uniform(0.005, 0.3))
            self._send(200, json.dumps({"ok": True, "echo": len(json.dumps(body))}).encode())
        else:
            self._send(404, b'{"error":"not found"}')

    def _llm(self, body: dict, anthropic: bool) -> None:
        rate, ttfb, tokens, rng = self._params(body)
        model = str(body.get("model") or ("claude-sonnet-4-5" if anthropic else "gpt-4o-mini"))
        words = [rng.choice(WORDS) for _ in range(tokens)]
        if not body.get("stream"):
            time.sleep(ttfb + tokens / max(rate, 1e-3))
            text = " ".join(words)
            if anthropic:
                doc = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                       "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 12, "output_tokens": tokens}}
            else:
                doc = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 12, "completion_tokens": tokens,
                                 "total_tokens": tokens + 12}}
            self._send(200, json.dumps(doc).encode())
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        time.sleep(ttfb)
        if anthropic:
            self._chunk(b'event: message_start\ndata: ' + json.dumps(
                {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                 "model": model, "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}}}).encode()
                + b'\n\nevent: content_block_start\ndata: {"type":"content_block_start","index":0,'
                b'"content_block":{"type":"text","text":""}}\n\n')
        pieces = []
        i = 0
        while i < len(words):
            n = rng.choice((1, 1, 1, 2, 3))
            pieces.append(" ".join(words[i : i + n]))
            i += n
        for piece, gap in zip(pieces, _gaps(rng, rate / 1.5, len(pieces)), strict=True):
            time.sleep(gap)
            if anthropic:
                data = {"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": " " + piece}}
                self._chunk(b"event: content_block_delta\ndata: " + json.dumps(data).encode() + b"\n\n")
            else:
                data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
                        "choices": [{"index": 0, "delta": {"content": " " + piece}, "finish_reason": None}]}
                self._chunk(b"data: " + json.dumps(data).encode() + b"\n\n")
        if anthropic:
            self._chunk(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
                        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
                        b'"end_turn"},"usage":{"output_tokens":%d}}\n\n' % tokens
                        + b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        else:
            self._chunk(b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"'
                        + model.encode() + b'","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
                        b'\n\ndata: [DONE]\n\n')
        self._chunk(b"")

    def _websocket(self) -> None:
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.end_headers()
        self.wfile.flush()
        rng = random.Random(self.headers.get("x-busted-seed", "0"))
        while True:
            head = self.rfile.read(2)
            if len(head) < 2 or head[0] & 0x0F == 0x8:
                return
            n = head[1] & 0x7F
            if n == 126:
                n = int.from_bytes(self.rfile.read(2), "big")
            self.rfile.read(4 + n)  # mask and payload
            for _ in range(rng.randint(1, 4)):
                time.sleep(rng.uniform(0.002, 0.03))
                msg = json.dumps({"type": "update", "value": rng.random()}).encode()[:125]
                self.wfile.write(bytes((0x81, len(msg))) + msg)
                self.wfile.flush()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class StreamServer:
    """The server on 127.0.0.1, TLS with the given certificate, in a daemon thread."""

    def __init__(self, cert: Path, key: Path, port: int = 0) -> None:
        self.httpd = _Server(("127.0.0.1", port), _Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StreamServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


def ws_client(port: int, ca: Path, messages: int, seed: int) -> None:
    """A WebSocket-like client: upgrade, then small masked frames answered by chatter."""
    rng = random.Random(seed)
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\nx-busted-seed: %d\r\n\r\n" % seed)
        s.settimeout(5.0)
        buf = s.recv(4096)
        for _ in range(messages):
            msg = json.dumps({"op": "ping", "n": rng.random()}).encode()[:125]
            mask = bytes(rng.randrange(256) for _ in range(4))
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(msg))
            s.sendall(bytes((0x81, 0x80 | len(msg))) + mask + masked)
            end = time.monotonic() + 0.15
            while time.monotonic() < end:
                s.settimeout(max(0.005, end - time.monotonic()))
                try:
                    buf = s.recv(4096)
                except TimeoutError:
                    break
                if not buf:
                    return
            time.sleep(rng.uniform(0.05, 0.5))
        s.sendall(b"\x88\x80\0\0\0\0")
