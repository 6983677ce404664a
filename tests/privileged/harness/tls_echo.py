"""A throw-away HTTPS server on 127.0.0.1 (self-signed, made with openssl) that answers
every POST with "ok", and a client script that POSTs a marker to it every half second,
for tests that only need some TLS write to find in the captured events
(test_container.py, test_systemd_sandbox.py)."""

from __future__ import annotations

import ssl
import subprocess
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# python3 -c CLIENT URL MARK: POSTs MARK to URL every 0.5 s for two minutes.
CLIENT = """
import ssl, sys, time, urllib.request
ctx = ssl._create_unverified_context()
for _ in range(240):
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=sys.argv[2].encode()),
                           context=ctx).read()
    time.sleep(0.5)
"""


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@contextmanager
def tls_echo_server(directory: Path):
    """Yields the port of a running server; stops it after."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
