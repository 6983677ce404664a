"""--output sinks through the real pipeline: file, syslog (UDP), webhook (HTTP)."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from .conftest import busted_cli


def test_file_syslog_and_webhook_sinks_get_every_event(monitor_factory, short_dir):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    udp.settimeout(5)
    datagrams: list[bytes] = []

    def read_udp():  # concurrently: syslog over UDP drops what a full buffer cannot hold
        try:
            while len(datagrams) < 300:
                datagrams.append(udp.recv(65535))
        except OSError:
            pass

    reader = threading.Thread(target=read_udp, daemon=True)
    reader.start()
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.extend(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = short_dir / "events.jsonl"
    try:
        mon = monitor_factory(
            "--source", "synthetic", "--rate", "1000", "--count", "300", "--exit-when-done",
            "--output", f"file:{path}",
            "--output", f"syslog:127.0.0.1:{udp.getsockname()[1]}",
            "--output", f"webhook:http://127.0.0.1:{server.server_port}/ingest",
            fmt="none")
        assert mon.wait_exit() == 0, mon.stderr_text()
        reader.join(10)
    finally:
        server.shutdown()
        udp.close()
    lines = path.read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(300))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(datagrams) == 300
    assert datagrams[0].startswith(b"<38>1 ") and b'"seq":0' in datagrams[0]
    assert sorted(e["seq"] for e in received) == list(range(300))


def test_a_bad_sink_is_refused_before_anything_starts(short_dir):
    result = busted_cli("monitor", "--source", "synthetic", "--runtime-dir", str(short_dir / "r"),
                        "--output", "kafka:broker:9092")
    assert result.returncode == 2
    assert "unknown sink" in result.stderr and "Traceback" not in result.stderr


def test_prometheus_metrics_show_the_counters(monitor_factory):
    import urllib.request

    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    mon = monitor_factory("--source", "synthetic", "--rate", "500", "--metrics",
                          f"127.0.0.1:{port}", fmt="none")
    mon.wait_running()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "busted_events_produced_total" in body
    assert 'busted_worker_up{worker="classify"} 1.0' in body
    assert mon.stop() == 0
