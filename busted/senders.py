"""The transports of the at-least-once sinks (see :mod:`busted.sinks`): HTTP for the
webhook and OTLP, TCP or TLS for syslog; and the RFC 5424 message both syslogs send.

Each ``deliver`` runs on its sink's sender thread, raises
:class:`~busted.sinks.RetryLater` for what may pass (a refused connection, a 5xx, 408,
429, a timeout) and :class:`~busted.sinks.SinkConfigError` for what will not (another
4xx, a redirect to another host, a certificate that does not verify).
"""

from __future__ import annotations

import fcntl
import gzip
import http.client
import logging
import os
import re
import socket
import ssl
import stat
import struct
import termios
import time
from urllib.parse import urljoin, urlsplit

import orjson

from busted import __version__
from busted.errors import UsageError
from busted.rootfiles import unsafe_path
from busted.sinks import RetryLater, SinkConfigError, SinkOptions, SpooledSink

log = logging.getLogger("busted.sinks")

CONNECT_TIMEOUT_S = 10.0
IO_TIMEOUT_S = 30.0  # a receiver slower than this per request is treated as down
RETRY_AFTER_MAX_S = 60.0
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110)


# --- headers and TLS, shared by every network sink ------------------------------------
def load_headers(sources: tuple[str, ...]) -> dict[str, str]:
    """``--output-header`` sources: ``file:PATH`` ("Name: value" lines, a private file
    that only root can change) or ``env:VAR`` (one "Name: value"). Values never appear in
    messages: they are usually credentials."""
    headers: dict[str, str] = {}
    for source in sources:
        kind, _, arg = source.partition(":")
        if kind == "env" and arg:
            if arg not in os.environ:
                raise UsageError(f"--output-header {source}: ${arg} is not set.",
                                 f"Export it (sudo drops the environment: sudo --preserve-env={arg}).")
            lines = [os.environ[arg]]
        elif kind == "file" and arg:
            lines = _read_secret_file(source, arg).splitlines()
        else:
            raise UsageError(f"--output-header {source}: write file:PATH or env:VAR.",
                             "Headers are never given on the command line: ps shows it.")
        for line in lines:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, colon, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if not colon or not _TOKEN.match(name) or not value or any(c in value for c in "\r\n\0"):
                raise UsageError(f"--output-header {source}: each line must read 'Name: value' "
                                 "(e.g. 'Authorization: Bearer ...').")
            headers[name] = value
    return headers


def _read_secret_file(source: str, path: str) -> str:
    reason = unsafe_path(path)
    if reason:
        raise UsageError(f"--output-header {source}: {reason}.",
                         "Keep header files where only root can change them.")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"--output-header {source}: cannot read it ({exc.strerror}).") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"--output-header {source}: not a regular file.")
        if st.st_mode & stat.S_IRWXO:
            raise UsageError(f"--output-header {source}: other users may read it "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}).", f"chmod 600 {path}")
        return os.read(fd, 1 << 16).decode("utf-8", "replace")
    finally:
        os.close(fd)


def tls_context(ca_file: str) -> ssl.SSLContext:
    """Verification on (host name and chain); ``--output-ca`` replaces the system's CAs."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--output-ca {ca_file}: cannot load it as PEM certificates ({exc}).") \
            from exc


def _verify_error(exc: ssl.SSLCertVerificationError) -> SinkConfigError:
    return SinkConfigError(f"TLS certificate not trusted: {exc.verify_message or exc.reason} "
                           "(give the receiver's CA with --output-ca)")


# --- HTTP: webhook and OTLP -----------------------------------------------------------
class HttpPoster:
    """POSTs to one URL over a kept-alive connection; follows a redirect only to the
    same scheme, host and port (307/308, which keep the method and body)."""

    def __init__(self, url: str, options: SinkOptions, content_type: str) -> None:
        self.url = url
        self.parts = urlsplit(url)
        self.context = tls_context(options.ca_file) if self.parts.scheme == "https" else None
        self.gzip = options.gzip
        self.headers = {"Content-Type": content_type, "User-Agent": f"busted/{__version__}",
                        **load_headers(options.headers)}
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.conn: http.client.HTTPConnection | None = None

    def _path(self) -> str:
        return (self.parts.path or "/") + (f"?{self.parts.query}" if self.parts.query else "")

    def _connect(self) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection(self.parts.hostname, self.parts.port,
                                               timeout=CONNECT_TIMEOUT_S, context=self.context)
        return http.client.HTTPConnection(self.parts.hostname, self.parts.port,
                                          timeout=CONNECT_TIMEOUT_S)

    def post(self, body: bytes) -> bytes:
        if self.gzip:
            body = gzip.compress(body, compresslevel=5)
        for _ in range(3):  # the request, and up to two redirects on the same origin
            try:
                if self.conn is None:
                    self.conn = self._connect()
                    self.conn.connect()
                    self.conn.sock.settimeout(IO_TIMEOUT_S)
                self.conn.request("POST", self._path(), body, self.headers)
                response = self.conn.getresponse()
                data = response.read()
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise _verify_error(exc) from exc
            except (OSError, http.client.HTTPException):
                self.close()
                raise
            if response.will_close:
                self.close()
            status = response.status
            if 200 <= status < 300:
                return data
            where = response.getheader("Location") or ""
            if status in (307, 308) and where:
                target = urlsplit(urljoin(self.url, where))
                if (target.scheme, target.netloc) == (self.parts.scheme, self.parts.netloc):
                    self.parts = target
                    continue
                raise SinkConfigError(f"HTTP {status} to another host ({target.netloc}): "
                                      "not followed; point --output at the final URL")
            if status in (408, 429) or status >= 500:
                raise RetryLater(f"HTTP {status} {response.reason}",
                                 _retry_after(response.getheader("Retry-After")))
            hint = {401: " (check --output-header)", 403: " (check --output-header)",
                    404: " (check the URL)"}.get(status, "")
            if 300 <= status < 400:
                hint = " (redirects are not followed: point --output at the final URL)"
            raise SinkConfigError(f"HTTP {status} {response.reason}{hint}")
        raise SinkConfigError("too many redirects")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _retry_after(value: str | None) -> float:
    try:
        return min(RETRY_AFTER_MAX_S, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP date: our own backoff applies


class WebhookSink(SpooledSink):
    """``webhook:URL``: each batch is one POST of a JSON array; a 2xx acknowledges it."""

    kind = "webhook"

    def __init__(self, spec: str, url: str, options: SinkOptions) -> None:
        self.poster = HttpPoster(url, options, "application/json")
        super().__init__(spec, options)

    def deliver(self, records: list[bytes]) -> None:
        self.poster.post(b"[" + b",".join(records) + b"]")

    def disconnect(self) -> None:
        self.poster.close()


class OtlpSink(SpooledSink):
    """``otlp:URL``: OTLP/HTTP protobuf logs (``/v1/logs`` is added to a bare URL)."""

    kind = "otlp"

    def __init__(self, spec: str, url: str, options: SinkOptions) -> None:
        from busted.otlp import LogEncoder

        parts = urlsplit(url)
        if parts.path in ("", "/"):
            url = url.rstrip("/") + "/v1/logs"
        self.poster = HttpPoster(url, options, "application/x-protobuf")
        self.encoder = LogEncoder(content=options.otlp_content)
        super().__init__(spec, options)
        self.stats["rejected"] = 0

    def deliver(self, records: list[bytes]) -> None:
        from busted.otlp import rejected_records

        answer = self.poster.post(self.encoder.encode(records))
        rejected, why = rejected_records(answer)
        if rejected:  # a partial success is final: the collector will not take them later
            self.stats["rejected"] += rejected
            log.warning("%s: the collector rejected %d log records: %s", self.target, rejected,
                        why[:200])

    def disconnect(self) -> None:
        self.poster.close()


# --- syslog ---------------------------------------------------------------------------
_HOSTNAME = socket.gethostname()[:255] or "-"
_SD_ID = "busted@32473"  # 32473: the example enterprise number of RFC 5612
_SD_FIELDS = (("event_id", "event_id"), ("provider", "llm_provider"), ("model", "llm_model"),
              ("pid", "pid"), ("process", "process_name"), ("decision", "policy"),
              ("action", "action"), ("uid", "uid"))
_SEVERITY = {"deny": 4, "audit": 5}  # warning, notice; anything else informational (6)
_FACILITY = 4  # security/authorization messages


def _sd_value(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(line: bytes) -> bytes:
    """One RFC 5424 message: the key fields as structured data, the JSON event as MSG."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        event = {}
    pri = _FACILITY * 8 + _SEVERITY.get(event.get("policy"), 6)
    stamp = event.get("timestamp") if isinstance(event.get("timestamp"), str) else "-"
    msgid = str(event.get("content_class") or event.get("event_type") or "-")[:32]
    params = " ".join(f'{name}="{_sd_value(event[key])}"' for name, key in _SD_FIELDS
                      if event.get(key) not in (None, ""))
    sd = f"[{_SD_ID} {params}]" if params else "-"
    head = f"<{pri}>1 {stamp} {_HOSTNAME} busted {os.getpid()} {msgid} {sd} "
    return head.encode("utf-8", "replace") + line


_TCP_INFO_BYTES_ACKED = 120  # offset of tcpi_bytes_acked in struct tcp_info (Linux >= 4.1)


def _tcp_progress(sock: socket.socket) -> tuple[int, int]:
    """(bytes the peer's TCP acknowledged, bytes still in our send queue), from the kernel."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 192)
    acked = struct.unpack_from("<Q", info, _TCP_INFO_BYTES_ACKED)[0] if len(info) >= 128 else 0
    queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    return acked, queued


class SyslogStreamSink(SpooledSink):
    """``syslog+tcp://`` and ``syslog+tls://``: RFC 5425 octet-counting frames.

    Syslog has no acknowledgement of its own. A written batch leaves the spool once the
    receiver's TCP acknowledged its last byte and the connection then stayed up for
    ``confirm_after_s`` (a receiver that stops may drop what its kernel had taken but it
    had not read yet: on a broken connection everything not yet confirmed is sent
    again). At exit the connection is half-closed: a receiver that then closes its side
    has read everything.
    """

    confirm_after_s = 2.0

    def __init__(self, spec: str, host: str, port: int, options: SinkOptions) -> None:
        self.kind = "syslog-tls" if spec.startswith("syslog+tls") else "syslog-tcp"
        self.addr = (host, port)
        self.context = tls_context(options.ca_file) if self.kind == "syslog-tls" else None
        self.sock: socket.socket | None = None
        super().__init__(spec, options)

    def _connect(self) -> socket.socket:
        raw = socket.create_connection(self.addr, timeout=CONNECT_TIMEOUT_S)
        if self.context is None:
            raw.settimeout(IO_TIMEOUT_S)
            return raw
        try:
            sock = self.context.wrap_socket(raw, server_hostname=self.addr[0])
        except ssl.SSLCertVerificationError as exc:
            raw.close()
            raise _verify_error(exc) from exc
        except OSError:
            raw.close()
            raise
        sock.settimeout(IO_TIMEOUT_S)
        return sock

    def deliver(self, records: list[bytes]) -> int:
        if self.sock is None:
            self.sock = self._connect()
        frames = []
        for record in records:
            message = syslog_message(record)
            frames.append(b"%d " % len(message))
            frames.append(message)
        self.sock.sendall(b"".join(frames))
        acked, queued = _tcp_progress(self.sock)
        return acked + queued  # the kernel's count of bytes written, ours included

    def acknowledged(self, mark: object) -> bool:
        if self.sock is None or self._peer_closed():
            raise RetryLater("the receiver closed the connection")
        return _tcp_progress(self.sock)[0] >= mark  # type: ignore[operator]

    def _peer_closed(self) -> bool:
        """Receivers send nothing: a readable socket means it was closed (or reset)."""
        sock = self.sock
        try:
            sock.settimeout(0)
            return sock.recv(4096) == b""
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True
        finally:
            try:
                sock.settimeout(IO_TIMEOUT_S)
            except OSError:
                pass

    def finish(self) -> bool:
        """Half-close and wait for the receiver to close after reading everything."""
        if self.sock is None:
            return False
        deadline = time.monotonic() + 1.0
        self.sock.shutdown(socket.SHUT_WR)
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if self.sock.recv(4096) == b"":
                    return True
            except (TimeoutError, ssl.SSLWantReadError):
                return False
            except OSError:
                return False
        return False

    def disconnect(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
