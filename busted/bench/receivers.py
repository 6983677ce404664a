"""Real receivers on loopback for the output sinks, shared by `busted bench outputs` and
the tests: an HTTP endpoint (webhook JSON or OTLP protobuf) that can be taken down, made
to fail or slowed, rsyslog (Debian's ``rsyslogd``) with a TCP and a TLS input, and a
throw-away CA for the TLS ones.

Every receiver records the ``event_id`` of what it got, so a caller can count what
arrived once, twice, or never.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from busted.bench.measure import stop_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


class HttpReceiver:
    """A webhook (``kind="webhook"``: JSON arrays) or OTLP/HTTP (``kind="otlp"``) endpoint.

    ``mode``: ``ok`` (answers ``status``), ``fail`` (503), ``slow`` (waits ``delay_s``, then
    answers); :meth:`down` closes the port and every open connection (connection refused)
    and :meth:`up` opens it again on the same port.
    """

    def __init__(self, kind: str = "webhook", port: int = 0, status: int = 200,
                 tls: tuple[str, str] | None = None, keep_records: bool = True) -> None:
        self.kind = kind
        self.keep_records = keep_records  # OTLP: decode whole records (tests), or ids only
        self.port = port or free_port()
        self.status = status
        self.tls = tls
        self.mode = "ok"
        self.delay_s = 0.0
        self.ids: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []  # OTLP: each record, decoded
        self.requests = 0
        self.events = 0  # received, duplicates included
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.first_at = self.last_at = 0.0
        self.up()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/ingest"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.mode == "down":
                    self.close_connection = True
                    return
                if receiver.mode == "fail":
                    return self._answer(503)
                if receiver.mode == "slow":
                    time.sleep(receiver.delay_s)
                if receiver.status < 300:
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    receiver._take(body, dict(self.headers))
                self._answer(receiver.status)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.server = server
        self.mode = "ok"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def down(self) -> None:
        """Connection refused from now on; kept-alive connections are dropped too."""
        self.mode = "down"
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _take(self, body: bytes, headers: dict[str, str]) -> None:
        if self.kind == "otlp" and not self.keep_records:
            records, ids = [], otlp_event_ids(body)
        elif self.kind == "otlp":
            records = decode_otlp(body)
            ids = [r["attributes"].get("busted.event_id") for r in records]
        else:
            records = []
            ids = [e.get("event_id") for e in json.loads(body)]
        now = time.monotonic()
        with self.lock:
            self.requests += 1
            self.events += len(ids)
            self.headers.append(headers)
            self.records.extend(records)
            self.ids.update(ids)
            self.first_at = self.first_at or now
            self.last_at = now

    def distinct(self) -> int:
        with self.lock:
            return len(self.ids)

    def close(self) -> None:
        self.down()


def decode_otlp(body: bytes) -> list[dict[str, Any]]:
    """Every log record of an ExportLogsServiceRequest, with its resource's attributes."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest.FromString(body)
    out = []
    for resource_logs in request.resource_logs:
        resource = {kv.key: _value(kv.value) for kv in resource_logs.resource.attributes}
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                out.append({
                    "resource": resource,
                    "attributes": {kv.key: _value(kv.value) for kv in record.attributes},
                    "event_name": record.event_name,
                    "severity_number": record.severity_number,
                    "time_unix_nano": record.time_unix_nano,
                    "body": MessageToDict(record.body).get("stringValue", ""),
                })
    return out


def otlp_event_ids(body: bytes) -> list[str]:
    """Only the busted.event_id of each record (cheap enough for the benchmark)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    ids = []
    for resource_logs in ExportLogsServiceRequest.FromString(body).resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                for kv in record.attributes:
                    if kv.key == "busted.event_id":
                        ids.append(kv.value.string_value)
                        break
    return ids


def _value(value) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


# --- TLS -------------------------------------------------------------------------------
def make_test_ca(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost (openssl, 2048-bit RSA)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {name: directory / name for name in ("ca.pem", "ca.key", "server.pem", "server.key")}

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=busted test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")
    return files


# --- rsyslog ---------------------------------------------------------------------------
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


class Rsyslog:
    """Debian's rsyslogd in the foreground with its own configuration: a plain TCP input
    and a TLS input (gtls driver, the test CA), writing ``structured data TAB message``
    lines to ``tcp.log`` and ``tls.log``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls_files = make_test_ca(self.dir / "tls")
        self.tcp_port = free_port()
        self.tls_port = free_port()
        self.out = {"tcp": self.dir / "tcp.log", "tls": self.dir / "tls.log"}
        self.conf = self.dir / "rsyslog.conf"
        (self.dir / "work").mkdir(exist_ok=True)
        self.conf.write_text(f"""
global(workDirectory="{self.dir / 'work'}" maxMessageSize="256k"
       defaultNetstreamDriverCAFile="{self.tls_files['ca.pem']}"
       defaultNetstreamDriverCertFile="{self.tls_files['server.pem']}"
       defaultNetstreamDriverKeyFile="{self.tls_files['server.key']}")
main_queue(queue.timeoutShutdown="20000" queue.timeoutActionCompletion="20000")
module(load="imtcp")
template(name="busted" type="string" string="%structured-data%\\t%msg%\\n")
ruleset(name="tcp") {{ action(type="omfile" file="{self.out['tcp']}" template="busted") }}
ruleset(name="tls") {{ action(type="omfile" file="{self.out['tls']}" template="busted") }}
input(type="imtcp" port="{self.tcp_port}" address="127.0.0.1" ruleset="tcp")
input(type="imtcp" port="{self.tls_port}" address="127.0.0.1" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
""")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.dir / "rsyslogd.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        wait_port(self.tcp_port)
        wait_port(self.tls_port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def lines(self, which: str = "tcp") -> list[tuple[str, dict[str, Any]]]:
        """(structured data, event) of each complete line ``which`` input wrote so far."""
        try:
            data = self.out[which].read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in data.split(b"\n")[:-1]:  # the last one may be half written
            sd, _, msg = line.decode("utf-8", "replace").partition("\t")
            try:
                out.append((sd, json.loads(msg)))
            except ValueError:
                out.append((sd, {"_unparsed": msg}))
        return out

    def log_text(self) -> str:
        try:
            return (self.dir / "rsyslogd.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()


def rsyslog_available() -> bool:
    return os.path.exists(RSYSLOGD) and os.path.exists(
        "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so") or bool(
        list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")))
