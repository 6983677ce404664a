"""Extra outputs of the output worker (``--output``), each fed JSON lines.

Local, best effort as before:

- ``file:PATH`` — appends to PATH (created 0600), reopened when rotated away; opened by
  :func:`busted.rootfiles.open_private`, so a planted symlink or file is refused;
- ``syslog:HOST:PORT`` — one RFC 5424 datagram per event over UDP: nothing acknowledges
  a datagram, so a datagram lost on the way is lost (kept for compatibility).

Network sinks, at-least-once (:class:`SpooledSink`): every event is first appended to the
sink's spool on disk (:mod:`busted.spool`), which is local and fast, so the output worker
never waits on the network. The sink's own sender thread reads batches from the spool,
sends them, and moves the spool's cursor only once the receiver acknowledged them; a
failure is retried with exponential backoff and jitter, a configuration error (an HTTP
4xx other than 408/429) is reported and not retried. Each event carries ``event_id`` so
the receiver can drop what a retry repeats. The transports (:mod:`busted.senders`):

- ``webhook:URL`` — POSTs JSON arrays; acknowledged by a 2xx;
- ``syslog+tcp://HOST:PORT`` and ``syslog+tls://HOST:PORT`` — RFC 5425 octet-counted
  RFC 5424 messages; acknowledged once the receiver's TCP acknowledged the bytes and the
  connection stayed up for a while after (or closed cleanly after reading them);
- ``otlp:URL`` — OTLP/HTTP protobuf log records (:mod:`busted.otlp`); acknowledged by a 2xx.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from busted.errors import UsageError
from busted.rootfiles import open_private
from busted.spool import DEFAULT_MAX_BYTES, Batch, Spool, default_dir

log = logging.getLogger("busted.sinks")

SYSLOG_MAX = 8192  # bytes per UDP datagram; longer events are cut (the file sink keeps all)
BATCH_EVENTS = 1000  # most events per request / write
BATCH_BYTES = 4 << 20  # most payload bytes per request / write
BATCH_AGE_S = 0.2  # a smaller batch waits at most this long for more events
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
CLOSE_DRAIN_S = 2.0  # at exit, senders get this long to deliver what is spooled
SYNC_EVERY_S = 1.0  # the spool is fsync-ed this often
STATES = ("sending", "retrying", "failing")


class RetryLater(Exception):
    """Delivery failed for now (receiver down, 5xx, 408, 429, timeout): try again."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SinkConfigError(Exception):
    """The receiver refused the request as wrong (HTTP 4xx, a redirect elsewhere, a
    certificate that does not verify): retrying will not help until someone fixes it."""


@dataclass(frozen=True)
class SinkOptions:
    """What the ``--output-*`` and ``--spool-*`` flags say, for every network sink."""

    spool_dir: Path
    spool_max: int = DEFAULT_MAX_BYTES
    headers: tuple[str, ...] = ()  # sources: "file:PATH" or "env:VAR" (never values)
    ca_file: str = ""
    gzip: bool = False
    otlp_content: bool = False

    @classmethod
    def from_config(cls, config) -> SinkOptions:
        return cls(spool_dir=Path(config.spool_dir) if config.spool_dir else default_dir(),
                   spool_max=config.spool_max, headers=config.output_headers,
                   ca_file=config.output_ca, gzip=config.output_gzip,
                   otlp_content=config.otlp_content)


class Sink:
    kind = "sink"

    def __init__(self, spec: str = "") -> None:
        self.label = sink_label(spec) if spec else self.kind
        self.target = redact_target(spec)
        self.stats: Counter[str] = Counter()

    def write(self, lines: list[bytes]) -> None:
        raise NotImplementedError

    def health(self) -> dict:
        """Counters and state for `busted status`, the summary and Prometheus."""
        return {"kind": self.kind, "target": self.target, "state": "sending", "last_error": "",
                **self.stats}

    def close(self, deadline: float | None = None) -> None:
        pass


class FileSink(Sink):
    kind = "file"
    REOPEN_CHECK_S = 1.0

    def __init__(self, spec: str, path: str) -> None:
        super().__init__(spec)
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
        self.stats["sent"] += len(lines)

    def close(self, deadline: float | None = None) -> None:
        self.file.close()


class SyslogUdpSink(Sink):
    kind = "syslog-udp"

    def __init__(self, spec: str, host: str, port: int) -> None:
        super().__init__(spec)
        from busted.senders import syslog_message

        self.addr = (host, port)
        self.format = syslog_message
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def write(self, lines: list[bytes]) -> None:
        for line in lines:
            datagram = self.format(line.rstrip(b"\n"))[:SYSLOG_MAX]
            try:
                self.sock.sendto(datagram, self.addr)
                self.stats["sent"] += 1
            except OSError:  # a full socket buffer (BlockingIOError) or no route
                self.stats["dropped"] += 1

    def close(self, deadline: float | None = None) -> None:
        self.sock.close()


class SpooledSink(Sink):
    """A network sink: spool on write, deliver from a sender thread (at-least-once).

    Subclasses implement ``deliver(records)`` (raise :class:`RetryLater` or
    :class:`SinkConfigError`), and, for stream transports, ``acknowledged(mark)``,
    ``finish()`` and ``disconnect()``.
    """

    # A delivered batch leaves the spool only after this long without the connection
    # failing (stream transports: the receiver's kernel may hold bytes its program never
    # read when it stops). 0: ``deliver`` returning is the acknowledgement.
    confirm_after_s = 0.0

    def __init__(self, spec: str, options: SinkOptions) -> None:
        super().__init__(spec)
        self.options = options
        self.spool = Spool(options.spool_dir / self.label, options.spool_max,
                           what=f"--output {self.target}")
        self.state = "sending"
        self.last_error = ""
        self._stopping = threading.Event()
        self._final: dict | None = None  # the spool's figures once it is closed
        self._deadline = 0.0
        self._unconfirmed: deque[tuple[float, object, Batch]] = deque()
        self.stats.update(sent=0, retried=0, errors=0)  # every key before the thread runs
        self.thread = threading.Thread(target=self._run, name=f"sink-{self.kind}", daemon=True)
        self.thread.start()

    # --- the output worker's side ------------------------------------------------------
    def write(self, lines: list[bytes]) -> None:
        self.spool.append([line.rstrip(b"\n") for line in lines])

    def health(self) -> dict:
        spooled = self._final or self.spool.stats()
        return {"kind": self.kind, "target": self.target, "state": self.state,
                "last_error": self.last_error, **self.stats, **spooled}

    def close(self, deadline: float | None = None) -> None:
        """Stop sending: deliver what is spooled until ``deadline``; the rest stays in the
        spool for the next monitor."""
        self._deadline = deadline or time.monotonic() + CLOSE_DRAIN_S
        self._stopping.set()
        self.spool.wake()

    def join(self) -> None:
        self.thread.join(max(0.0, self._deadline - time.monotonic()) + 0.5)
        if not self.thread.is_alive():  # else it is stuck in a send: exit closes it all
            self._final = self.spool.stats()
            self.spool.close()

    # --- to be provided by the transport ----------------------------------------------
    def deliver(self, records: list[bytes]) -> object:
        """Send records; returns a mark that ``acknowledged`` understands."""
        raise NotImplementedError

    def acknowledged(self, mark: object) -> bool:
        """Whether everything up to ``mark`` reached the receiver (stream transports);
        raises RetryLater when the connection broke."""
        return True

    def finish(self) -> bool:
        """At exit, after the last delivery: True when the receiver read everything."""
        return True

    def disconnect(self) -> None:
        pass

    # --- the sender thread ---------------------------------------------------------------
    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        next_sync = time.monotonic() + SYNC_EVERY_S
        batch: Batch | None = None
        while True:
            now = time.monotonic()
            stopping = self._stopping.is_set()
            if stopping and (now >= self._deadline or self.state == "failing" or
                             self.spool.unread() == 0):
                break
            if now >= next_sync:
                self.spool.sync()
                next_sync = now + SYNC_EVERY_S
            batch = None
            try:
                self._confirm(now)
                if self.state == "failing":  # a configuration error: wait for the exit
                    self._stopping.wait(1.0)
                    continue
                if not self._ready(stopping):
                    continue
                batch = self.spool.read(BATCH_EVENTS, BATCH_BYTES)
                if batch is None:
                    continue
                mark = self.deliver(batch.records)
                batch.records = []  # only its place in the spool is needed from now on
                self._unconfirmed.append((time.monotonic(), mark, batch))
                self._confirm(time.monotonic())
                if self.state != "sending":
                    log.info("%s: delivering again", self.target)
                self.state = "sending"
                backoff = BACKOFF_FIRST_S
            except SinkConfigError as exc:
                self._failed(f"{exc}", batch, config=True)
            except Exception as exc:  # noqa: BLE001 - any failure of the transport: retry
                self._failed(_describe(exc), batch)
                if self._stopping.is_set():
                    break  # exiting: what is left waits in the spool for the next monitor
                delay = max(getattr(exc, "retry_after_s", 0.0),
                            backoff * random.uniform(0.5, 1.0))  # full jitter on the upper half
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                self._stopping.wait(delay)
        self._finish()

    def _ready(self, stopping: bool) -> bool:
        """Whether to read a batch now; otherwise waits a little (for events, or for a
        small batch to grow: at most BATCH_AGE_S after its first event was spooled)."""
        short = 0.05 if self._unconfirmed else 0.25  # unconfirmed batches are looked at often
        unread = self.spool.unread()
        if unread == 0:
            self.spool.wait(short)
            return False
        if unread >= BATCH_EVENTS or stopping:
            return True
        wait = BATCH_AGE_S - (time.time() - self.spool.first_unread_time())
        if wait <= 0:
            return True
        self._stopping.wait(min(wait, short))
        return False

    def _confirm(self, now: float) -> None:
        while self._unconfirmed:
            sent_at, mark, batch = self._unconfirmed[0]
            if now - sent_at < self.confirm_after_s or not self.acknowledged(mark):
                return
            self._unconfirmed.popleft()
            self._commit(batch)

    def _commit(self, batch: Batch) -> None:
        self.spool.commit(batch)
        self.stats["sent"] += sum(batch.per_segment.values())

    def _failed(self, message: str, batch: Batch | None, config: bool = False) -> None:
        """Everything not acknowledged is read again from the spool (and counted as
        retried): the failed batch, and delivered batches not yet confirmed."""
        again = sum(sum(b.per_segment.values()) for _, _, b in self._unconfirmed)
        if batch is not None and batch.records:  # it failed in deliver()
            again += len(batch.records)
        self._unconfirmed.clear()
        self.spool.rewind()
        self.disconnect()
        self.stats["errors"] += 1
        self.stats["retried"] += again
        message = message[:300]
        if config:
            if self.state != "failing":
                log.error("%s: %s — not retried; events stay in the spool for the next "
                          "monitor (fix the receiver or the flags, then restart)",
                          self.target, message)
            self.state = "failing"
        else:
            if self.state == "sending" or message != self.last_error:
                log.warning("%s: %s; retrying (events are kept in the spool)", self.target, message)
            self.state = "retrying"
        self.last_error = message

    def _finish(self) -> None:
        if self._unconfirmed and self.state == "sending":
            try:
                if self.finish():  # read to the end by the receiver: all acknowledged
                    while self._unconfirmed:
                        self._commit(self._unconfirmed.popleft()[2])
            except Exception as exc:  # noqa: BLE001 - left in the spool for the next run
                log.debug("%s: closing: %s", self.target, exc)
        self.disconnect()
        self.spool.sync()


def _describe(exc: Exception) -> str:
    if isinstance(exc, RetryLater | SinkConfigError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- specs ---------------------------------------------------------------------------
_HELP = ("Use file:PATH, syslog:HOST:PORT (UDP), syslog+tcp://HOST:PORT, "
         "syslog+tls://HOST:PORT, webhook:URL or otlp:URL.")


def parse_spec(spec: str) -> tuple[str, tuple]:
    """Check an ``--output`` spelling; returns (kind, constructor arguments)."""
    kind, _, arg = spec.partition(":")
    if kind == "file" and arg:
        return "file", (arg,)
    if kind == "syslog" and arg:
        host, _, port = arg.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--output {spec}: write syslog:HOST:PORT (e.g. syslog:siem:514).")
        return "syslog-udp", (host.strip("[]"), int(port))
    if kind in ("syslog+tcp", "syslog+tls", "syslog+udp"):
        parts = urlsplit(spec)
        try:
            port = parts.port or (6514 if kind == "syslog+tls" else 514)
        except ValueError:
            port = 0
        if not parts.hostname or not port or parts.path not in ("", "/"):
            raise UsageError(f"--output {spec}: write {kind}://HOST:PORT "
                             f"(e.g. {kind}://siem.example:{6514 if kind == 'syslog+tls' else 514}).")
        if kind == "syslog+udp":
            return "syslog-udp", (parts.hostname, port)
        return kind.replace("+", "-"), (parts.hostname, port)
    if kind in ("webhook", "otlp") and arg:
        parts = urlsplit(arg)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--output {spec}: give an http:// or https:// URL.")
        if parts.username or parts.password:
            raise UsageError(f"--output {spec}: put no credentials in the URL (ps shows it).",
                             "Send them as a header with --output-header file:PATH or env:VAR.")
        return kind, (arg,)
    raise UsageError(f"--output {spec}: unknown sink.", _HELP)


def sink_label(spec: str) -> str:
    """A stable, readable name for a sink: its spool directory and its label in status,
    e.g. ``webhook-siem.example-443-3f2a9c1e``."""
    kind, args = parse_spec(spec)
    if kind in ("webhook", "otlp"):
        parts = urlsplit(args[0])
        where = f"{parts.hostname}-{parts.port or (443 if parts.scheme == 'https' else 80)}"
    elif kind == "file":
        where = os.path.basename(args[0])
    else:
        where = f"{args[0]}-{args[1]}"
    digest = hashlib.sha256(spec.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{kind}-{where}")[:80] + f"-{digest}"


def redact_target(spec: str) -> str:
    """The spec as shown in status and logs: no query string (it may hold a token)."""
    kind, _, arg = spec.partition(":")
    if kind in ("webhook", "otlp"):
        parts = urlsplit(arg)
        return f"{kind}:{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")
    return spec


def open_sink(spec: str, options: SinkOptions | None = None) -> Sink:
    """Build a sink from its ``--output`` spelling."""
    kind, args = parse_spec(spec)
    if kind == "file":
        return FileSink(spec, *args)
    if kind == "syslog-udp":
        return SyslogUdpSink(spec, *args)
    from busted import senders

    options = options or SinkOptions(spool_dir=default_dir())
    cls = {"webhook": senders.WebhookSink, "otlp": senders.OtlpSink,
           "syslog-tcp": senders.SyslogStreamSink, "syslog-tls": senders.SyslogStreamSink}[kind]
    return cls(spec, *args, options=options)
