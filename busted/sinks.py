"""Extra outputs of the output worker (``--output``), each fed JSON lines:

- ``file:PATH`` — appends to PATH (created 0600), reopened when rotated away; opened
  by :func:`busted.rootfiles.open_private`, so a symlink or a file another user planted
  there is refused rather than written to as root;
- ``syslog:HOST:PORT`` — one RFC 5424 datagram per event over UDP;
- ``webhook:URL`` — POSTs batches as a JSON array from a background thread.

None of them may stall the pipeline: the file is local, syslog is UDP and never waits,
and the webhook has a bounded queue whose overflow is counted as dropped.
"""

from __future__ import annotations

import http.client
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

from busted.errors import UsageError
from busted.rootfiles import open_private

log = logging.getLogger("busted.sinks")

SYSLOG_MAX = 8192  # bytes per datagram; longer events are cut (the file sink keeps all)
WEBHOOK_QUEUE = 256  # batches waiting for the webhook before new ones are dropped


class Sink:
    name = "sink"

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    def write(self, lines: list[bytes]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileSink(Sink):
    name = "file"
    REOPEN_CHECK_S = 1.0

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._open()

    def _open(self) -> None:
        fd = open_private(self.path, "the --output file")
        self.file = os.fdopen(fd, "ab")
        self.inode = os.fstat(fd).st_ino
        self.next_check = time.monotonic() + self.REOPEN_CHECK_S

    def write(self, lines: list[bytes]) -> None:
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + self.REOPEN_CHECK_S
            try:
                rotated = os.stat(self.path).st_ino != self.inode
            except FileNotFoundError:
                rotated = True
            if rotated:  # logrotate moved it away: follow the name, not the old inode
                self.file.close()
                self._open()
        self.file.write(b"".join(lines))
        self.file.flush()
        self.stats["written"] += len(lines)

    def close(self) -> None:
        self.file.close()


class SyslogSink(Sink):
    name = "syslog"

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.hostname = socket.gethostname()
        # <PRI> = facility 4 (security/authorization) * 8 + severity 6 (informational).
        self.header = f"<38>1 %s {self.hostname} busted {os.getpid()} event - "

    def write(self, lines: list[bytes]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        prefix = (self.header % stamp).encode()
        for line in lines:
            datagram = (prefix + line.rstrip(b"\n"))[:SYSLOG_MAX]
            try:
                self.sock.sendto(datagram, self.addr)
                self.stats["sent"] += 1
            except (BlockingIOError, OSError):
                self.stats["dropped"] += 1

    def close(self) -> None:
        self.sock.close()


class WebhookSink(Sink):
    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        super().__init__()
        self.parts = urlsplit(url)
        self.timeout_s = timeout_s
        self.queue: queue.Queue[list[bytes] | None] = queue.Queue(WEBHOOK_QUEUE)
        self.thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self.thread.start()

    def write(self, lines: list[bytes]) -> None:
        try:
            self.queue.put_nowait(lines)
        except queue.Full:
            self.stats["dropped"] += len(lines)

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.parts.scheme == "https" \
            else http.client.HTTPConnection
        return cls(self.parts.hostname, self.parts.port, timeout=self.timeout_s)

    def _run(self) -> None:
        conn = None
        path = self.parts.path or "/"
        if self.parts.query:
            path += "?" + self.parts.query
        while (lines := self.queue.get()) is not None:
            body = b"[" + b",".join(line.rstrip(b"\n") for line in lines) + b"]"
            try:
                conn = conn or self._connection()
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status >= 300:
                    raise OSError(f"HTTP {response.status}")
                self.stats["sent"] += len(lines)
            except (OSError, http.client.HTTPException) as exc:
                self.stats["errors"] += len(lines)
                if self.stats["errors"] <= len(lines):  # the first failure only
                    log.warning("webhook %s failed: %s", self.parts.hostname, exc)
                if conn is not None:
                    conn.close()
                conn = None

    def close(self) -> None:
        try:
            self.queue.put(None, timeout=1)
        except queue.Full:
            pass
        self.thread.join(timeout=2)


def parse_spec(spec: str) -> tuple[str, tuple]:
    """Check an ``--output`` spelling; returns (kind, constructor arguments)."""
    kind, _, arg = spec.partition(":")
    if kind == "file" and arg:
        return kind, (arg,)
    if kind == "syslog" and arg:
        host, _, port = arg.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--output {spec}: write syslog:HOST:PORT (e.g. syslog:siem:514).")
        return kind, (host.strip("[]"), int(port))
    if kind == "webhook" and arg:
        parts = urlsplit(arg)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--output {spec}: give an http:// or https:// URL.")
        return kind, (arg,)
    raise UsageError(f"--output {spec}: unknown sink.",
                     "Use file:PATH, syslog:HOST:PORT or webhook:URL.")


def open_sink(spec: str) -> Sink:
    """Build a sink from its ``--output`` spelling."""
    kind, args = parse_spec(spec)
    return {"file": FileSink, "syslog": SyslogSink, "webhook": WebhookSink}[kind](*args)
