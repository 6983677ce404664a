"""A small threaded HTTP/1.1 server, TLS or plain, that records every request it reads.

Binds one ``(address, port)`` on loopback; one thread accepts, one thread per connection
does the TLS handshake (so a stuck client cannot block the accept loop) and then serves
keep-alive requests. Request bodies may use Content-Length or chunked encoding (node
sends chunked when a body is written in pieces). The recorded requests let a test check
what really reached the server, next to what the monitor says it saw.

A handler returns a :class:`Response`; a streamed response is written chunk by chunk
(one ``sendall`` — one ``SSL_write`` — per chunk, with an optional pause between chunks)
the way LLM APIs stream their answers.
"""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

REASONS = {101: "Switching Protocols", 200: "OK", 400: "Bad Request", 404: "Not Found",
           500: "Internal Server Error"}


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    sni: str | None
    peer: tuple[str, int]
    received_at: float = field(default_factory=time.time)
    answer: str = ""  # the text the fake API answered with (set by the handler)


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # When set, the body is these chunks, written one by one (chunked encoding unless a
    # content-length header is given), ``pause_s`` apart.
    stream: Iterable[bytes] | None = None
    pause_s: float = 0.0
    # When set (a 101 answer), the connection is handed to it after the head is sent:
    # ``upgrade(conn, rfile, server)`` speaks the new protocol until it returns.
    upgrade: Callable[[socket.socket, io.BufferedReader, HttpServer], None] | None = None


Handler = Callable[[Request], Response]


class HttpServer:
    """Serve ``handler`` on ``address:port``; TLS when ``tls_contexts`` is given.

    ``tls_contexts`` maps a server name to the context presenting its certificate;
    ``default_host`` is used when the client sends no (or an unknown) SNI.
    """

    def __init__(
        self,
        address: str,
        port: int,
        handler: Handler,
        tls_contexts: dict[str, ssl.SSLContext] | None = None,
        default_host: str | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self.handler = handler
        self.requests: list[Request] = []
        self._raw = bytearray()  # every plaintext byte any client sent, in arrival order
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._stopping = False
        self._tls = None
        if tls_contexts:
            base = tls_contexts[default_host or next(iter(tls_contexts))]
            base.sni_callback = self._pick_certificate(tls_contexts)
            self._tls = base

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> HttpServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.address, self.port))
        except OSError as exc:
            listener.close()
            raise RuntimeError(
                f"cannot listen on {self.address}:{self.port}: {exc} "
                "(port < 1024 needs root; is another test server running?)"
            ) from exc
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept_loop, name=f"http-{self.port}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests use ------------------------------------------------------------
    def wait_for_request(self, predicate: Callable[[Request], bool], timeout: float = 10.0) -> Request:
        """The first recorded request matching ``predicate``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [f"{r.method} {r.path} ({len(r.body)} B, sni={r.sni})" for r in self.requests[-5:]]
                    raise AssertionError(
                        f"the server on {self.address}:{self.port} received no matching request "
                        f"within {timeout:.0f}s; last requests: {seen}; errors: {self.errors[-3:]}"
                    )
                self._cond.wait(left)

    def record(self, request: Request) -> None:
        """Add a request read by a protocol the server was upgraded to (WebSocket)."""
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def received(self) -> bytes:
        """Every plaintext byte received so far (complete requests or not)."""
        with self._cond:
            return bytes(self._raw)

    def _record_raw(self, data: bytes) -> None:
        with self._cond:
            self._raw += data

    # --- serving -------------------------------------------------------------------
    @staticmethod
    def _pick_certificate(contexts: dict[str, ssl.SSLContext]):
        def callback(sslsock, server_name, _ctx):
            sslsock.sni_name = server_name
            if server_name in contexts:
                sslsock.context = contexts[server_name]

        return callback

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True).start()

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        conn.settimeout(60)
        sni = None
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
                sni = getattr(conn, "sni_name", None)
            self._conns.add(conn)
            rfile = io.BufferedReader(_Tap(conn, self._record_raw))
            while not self._stopping:
                request = self._read_request(rfile, sni, peer)
                if request is None:
                    return
                try:
                    response = self.handler(request)
                except Exception as exc:  # a handler bug must show up in the test, not hang it
                    self.errors.append(f"handler: {exc!r}")
                    response = Response(500, [("content-type", "text/plain")], str(exc).encode())
                with self._cond:
                    self.requests.append(request)
                    self._cond.notify_all()
                self._write_response(conn, response)
                if response.upgrade is not None:
                    response.upgrade(conn, rfile, self)
                    return
                if request.headers.get("connection", "").lower() == "close":
                    return
        except (OSError, ssl.SSLError, ValueError) as exc:
            if not self._stopping:
                self.errors.append(f"{peer}: {exc!r}")
        finally:
            self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    @staticmethod
    def _read_request(rfile, sni: str | None, peer: tuple[str, int]) -> Request | None:
        line = rfile.readline(65537)
        if not line.strip():
            return None
        method, target, _version = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(rfile.readline(1024).split(b";")[0], 16)
                if size == 0:
                    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(rfile.read(size))
                rfile.readline(3)
            body = b"".join(parts)
        else:
            body = rfile.read(int(headers.get("content-length", "0") or 0))
        return Request(method, target, headers, body, sni, peer)

    @staticmethod
    def _write_response(conn: socket.socket, response: Response) -> None:
        head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'OK')}"]
        names = {name.lower() for name, _ in response.headers}
        head += [f"{name}: {value}" for name, value in response.headers]
        if response.stream is None:
            if "content-length" not in names and response.status != 101:
                head.append(f"content-length: {len(response.body)}")
            conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
            return
        chunked = "content-length" not in names
        if chunked:
            head.append("transfer-encoding: chunked")
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        for i, chunk in enumerate(response.stream):
            if i and response.pause_s:
                time.sleep(response.pause_s)
            conn.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            conn.sendall(b"0\r\n\r\n")


class _Tap(io.RawIOBase):
    """A socket read as a file, every byte also handed to ``sink``."""

    def __init__(self, sock: socket.socket, sink: Callable[[bytes], None]) -> None:
        self.sock = sock
        self.sink = sink

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.sock.recv_into(buffer)
        if n:
            self.sink(bytes(memoryview(buffer)[:n]))
        return n
