"""KernelSource as root, directly (no monitor, no pipeline): real probes, real clients.

One source is started for the module (bcc compiles once, a few seconds). Servers run in
this pytest process, which the source ignores as its own; every client is a separate
process started after ``start()`` returned, talking over loopback on an address of this
module's own (127.77.X.Y) so nothing collides with other tests on the machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from busted.config import MonitorConfig
from busted.kernel import dns

pytestmark = pytest.mark.privileged

MAX_COPY = 256 * 1024
TIMEOUT = 20.0
SNI = "api.openai.com"
RESPONSE_BODY = b'{"id":"chatcmpl-1","choices":[{"message":{"content":"hi"}}]}'


def _address() -> str:
    pid = os.getpid()
    return f"127.77.{(pid >> 8) & 0xFF}.{1 + pid % 254}"


ADDR = _address()


# --- servers (threads in this process: ignored by the source) ---------------------------


def _read_request(conn) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class Server:
    """HTTP/1.1 on loopback, TLS or not; answers every request with RESPONSE_BODY,
    or with ``big`` bytes for a request to /big."""

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ADDR, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.context = context
        self.big = 4 * 1024 * 1024
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            while True:
                request = _read_request(conn)
                if not request:
                    return
                body = b"z" * self.big if request.startswith(b"GET /big") else RESPONSE_BODY
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(crt), "-days", "1", "-subj", f"/CN={SNI}",
         "-addext", f"subjectAltName=DNS:{SNI}"],
        check=True, capture_output=True,
    )
    return crt, key


@pytest.fixture(scope="module")
def tls_server(cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    server = Server(0, ctx)
    yield server
    server.close()


@pytest.fixture(scope="module")
def plain_server():
    server = Server(11434, None)
    yield server
    server.close()


@pytest.fixture(scope="module")
def dns_server():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ADDR, 53))

    def answer() -> None:
        while True:
            try:
                query, peer = sock.recvfrom(512)
            except OSError:
                return
            try:
                sock.sendto(dns.encode_answer(query, ["10.11.12.13"]), peer)
            except (dns.DnsError, OSError):
                pass

    threading.Thread(target=answer, daemon=True).start()
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def source():
    from busted.sources.kernel import KernelSource

    # A big ring: the machine is shared, and other people's TLS benchmarks flood the
    # same system-wide probes while these tests run.
    src = KernelSource(MonitorConfig(max_copy=MAX_COPY, ring_pages=8192))
    src.start()
    src.seen = []
    src.clients = set()  # pids of the clients started here: only their events are kept
    yield src
    src.close()


def drain(src, timeout: float = 0.05) -> None:
    """Poll once, keeping only the events of clients started by these tests."""
    src.seen.extend(e for e in src.poll(timeout) if e.get("pid") in src.clients)


def collect(src, match: Callable[[dict], bool], count: int = 1, timeout: float = TIMEOUT) -> list[dict]:
    """Poll until ``count`` events matching ``match`` arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        drain(src, 0.1)
        found = [e for e in src.seen if match(e)]
        if len(found) >= count:
            return found
    found = [e for e in src.seen if match(e)]
    summary = [(e.get("event_type"), e.get("pid"), e.get("process_name")) for e in src.seen[-30:]]
    pytest.fail(f"expected {count} matching events within {timeout}s, got {len(found)}; "
                f"last events: {summary}; source stats: {src.stats()}; "
                f"attach errors: {src.attach_errors[-5:]}")


def start(src, argv: list[str], **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE, **kwargs)
    src.clients.add(proc.pid)
    return proc


def run_client(src, code: str, *args: str) -> subprocess.Popen:
    return start(src, [sys.executable, "-c", textwrap.dedent(code), *args])


PY_CLIENT = """
    import socket, ssl, sys
    port, body_size, extra = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = ssl.create_default_context(cafile=sys.argv[4])
    ctx.check_hostname = False
    conn = socket.create_connection((sys.argv[5], port))
    tls = ctx.wrap_socket(conn, server_hostname=sys.argv[6])
    def request(path, body):
        head = (f"POST {path} HTTP/1.1\\r\\nHost: {sys.argv[6]}\\r\\n"
                f"content-type: application/json\\r\\ncontent-length: {len(body)}\\r\\n\\r\\n")
        tls.sendall(head.encode() + body)
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            data += tls.recv(65536)
        return data
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + b"q" * body_size + b'"}]}'
    print(request("/v1/chat/completions", body)[:12], flush=True)
    for _ in range(extra):
        sys.stdin.readline()
        print(request("/v1/chat/completions", b'{"again":true}')[:12], flush=True)
"""


def _tls_client(source, tls_server, cert, body_size: int = 100, extra: int = 0):
    return run_client(source, PY_CLIENT, str(tls_server.port), str(body_size), str(extra),
                      str(cert[0]), ADDR, SNI)


def _finish(proc, src) -> None:
    """Wait for a client while polling: the source probes new binaries from poll()."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        drain(src)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err.decode()[-2000:]


# --- tests ---------------------------------------------------------------------------


def test_python_ssl_request_and_response_are_captured(source, tls_server, cert):
    proc = _tls_client(source, tls_server, cert)
    _finish(proc, source)
    mine = lambda e: e.get("pid") == proc.pid  # noqa: E731
    writes = collect(source, lambda e: mine(e) and e["event_type"] == "TLS_DATA_WRITE")
    reads = collect(source, lambda e: mine(e) and e["event_type"] == "TLS_DATA_READ")
    w, r = writes[0], reads[0]
    for ev in (w, r):
        assert ev["process_name"] == Path(sys.executable).name[:15] or ev["process_name"].startswith("python")
        assert ev["sni"] == SNI
        assert ev["dst_ip"] == ADDR and ev["dst_port"] == tls_server.port
        assert ev["src_ip"].startswith("127.") and ev["src_port"] > 0
        assert ev["uid"] == os.getuid() and ev["tid"] == proc.pid
        assert ev["conn_id"] == w["conn_id"]
    assert w["direction"] == "write" and r["direction"] == "read"
    assert w["payload"].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b'"model":"gpt-4o"' in w["payload"]
    assert not w["truncated"]
    assert b"".join(e["payload"] for e in reads).startswith(b"HTTP/1.1 200 OK")
    assert RESPONSE_BODY in b"".join(e["payload"] for e in reads)
    conns = collect(source, lambda e: mine(e) and e["event_type"] in
                    ("TCP_CONNECT", "TCP_ESTABLISHED", "TCP_CLOSE"), count=3)
    assert {e["event_type"] for e in conns} == {"TCP_CONNECT", "TCP_ESTABLISHED", "TCP_CLOSE"}
    close = next(e for e in conns if e["event_type"] == "TCP_CLOSE")
    assert close["bytes"] > len(w["payload"])  # ciphertext both ways


def test_payload_larger_than_one_chunk_arrives_whole(source, tls_server, cert):
    size = 100_000  # > 16 KiB chunks, < MAX_COPY: several ring records, one event
    proc = _tls_client(source, tls_server, cert, body_size=size)
    _finish(proc, source)
    writes = collect(source, lambda e: e.get("pid") == proc.pid and e["event_type"] == "TLS_DATA_WRITE")
    payload = b"".join(e["payload"] for e in writes)
    assert len(writes) == 1, [len(e["payload"]) for e in writes]
    assert not writes[0]["truncated"]
    assert writes[0]["bytes"] == len(payload) > size
    assert payload.endswith(b"q" * 100 + b'"}]}')


def test_verdict_stops_copying_the_connection(source, tls_server, cert):
    proc = _tls_client(source, tls_server, cert, extra=3)
    proc.stdout.readline()  # first request answered
    first = collect(source, lambda e: e.get("pid") == proc.pid and e["event_type"] == "TLS_DATA_WRITE")
    conn_id = first[0]["conn_id"]
    source.feedback({"cmd": "verdict", "pid": proc.pid, "conn_id": conn_id, "capture": False})
    for _ in range(3):
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        proc.stdout.readline()
    _finish(proc, source)
    # the TCP close comes after every write: once it is here, nothing else is pending
    collect(source, lambda e: e.get("pid") == proc.pid and e["event_type"] == "TCP_CLOSE")
    drain(source, 0.2)
    data = [e for e in source.seen if e.get("pid") == proc.pid and e["event_type"].startswith("TLS_DATA")]
    assert all(b"again" not in e["payload"] for e in data)
    assert len([e for e in data if e["direction"] == "write"]) == 1


def test_lost_counter_is_reported(source):
    stats = source.stats()
    assert isinstance(stats["lost"], int) and stats["lost"] >= 0
    assert "kernel_ringbuf_full" in stats
    assert stats["uprobes"] > 0


def test_plain_text_to_ollama_port_is_captured(source, plain_server):
    code = """
        import socket, sys
        s = socket.create_connection((sys.argv[1], 11434))
        body = b'{"model":"llama3","prompt":"why is the sky blue?"}'
        s.sendall(b"POST /api/generate HTTP/1.1\\r\\nHost: localhost:11434\\r\\n"
                  b"content-length: %d\\r\\n\\r\\n" % len(body) + body)
        print(s.recv(65536)[:12])
    """
    proc = run_client(source, code, ADDR)
    _finish(proc, source)
    mine = lambda e: e.get("pid") == proc.pid  # noqa: E731
    w = collect(source, lambda e: mine(e) and e["event_type"] == "DATA_WRITE")[0]
    r = collect(source, lambda e: mine(e) and e["event_type"] == "DATA_READ")[0]
    assert w["payload"].startswith(b"POST /api/generate HTTP/1.1")
    assert b"why is the sky blue?" in w["payload"]
    assert r["payload"].startswith(b"HTTP/1.1 200 OK")
    assert w["dst_port"] == 11434 and w["dst_ip"] == ADDR
    assert w["conn_id"] == r["conn_id"]


def test_dns_query_and_answer_are_reported_with_the_name(source, dns_server):
    code = """
        import socket, sys
        from busted.kernel import dns
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((sys.argv[1], 53))
        s.send(dns.encode_query("api.anthropic.com"))
        print(dns.decode(s.recv(512)).addrs)
    """
    proc = run_client(source, code, ADDR)
    _finish(proc, source)
    mine = lambda e: e.get("pid") == proc.pid  # noqa: E731
    q = collect(source, lambda e: mine(e) and e["event_type"] == "DNS_QUERY")[0]
    a = collect(source, lambda e: mine(e) and e["event_type"] == "DNS_ANSWER")[0]
    assert q["dns_name"] == "api.anthropic.com"
    assert a["dns_name"] == "api.anthropic.com" and a["dns_addrs"] == ["10.11.12.13"]


NODE_CLIENT = """
const tls = require('tls');
const [port, host, sni, delay] = process.argv.slice(-4);
setTimeout(() => {
  const s = tls.connect({port: +port, host, servername: sni, rejectUnauthorized: false}, () => {
    s.write('POST /v1/messages HTTP/1.1\\r\\nHost: ' + sni + '\\r\\ncontent-length: 2\\r\\n\\r\\n{}');
  });
  s.on('data', (d) => { console.log(d.toString().slice(0, 12)); s.end(); });
}, +delay);
"""


def _node_client(source, exe: str, tls_server, delay_ms: int):
    return start(source, [exe, "-e", NODE_CLIENT, "--", str(tls_server.port), ADDR, SNI,
                          str(delay_ms)])


def _check_node(source, proc, tls_server) -> None:
    _finish(proc, source)
    mine = lambda e: e.get("pid") == proc.pid  # noqa: E731
    w = collect(source, lambda e: mine(e) and e["event_type"] == "TLS_DATA_WRITE")[0]
    r = collect(source, lambda e: mine(e) and e["event_type"] == "TLS_DATA_READ")[0]
    assert w["payload"].startswith(b"POST /v1/messages HTTP/1.1")
    assert r["payload"].startswith(b"HTTP/1.1 200 OK")
    assert w["sni"] == SNI
    assert w["dst_port"] == tls_server.port and r["dst_port"] == tls_server.port


def test_node_client_is_captured(source, tls_server):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.fail("node is missing: apt-get install -y nodejs (deploy/setup-host.sh)")
    _check_node(source, _node_client(source, node, tls_server, 0), tls_server)


def test_new_openssl_binary_started_later_is_probed(source, tls_server, tmp_path):
    """A copy of node the source never saw: found from the exec tracepoint."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.fail("node is missing: apt-get install -y nodejs (deploy/setup-host.sh)")
    copy = tmp_path / "agent-node"
    shutil.copy2(node, copy)
    # the client waits before its first TLS call: probes land while it runs
    _check_node(source, _node_client(source, str(copy), tls_server, 1500), tls_server)


def test_verdict_stops_copying_plain_text_too(source, plain_server):
    code = """
        import socket, sys
        s = socket.create_connection((sys.argv[1], 11434))
        def ask(body):
            s.sendall(b"POST /api/generate HTTP/1.1\\r\\nHost: x\\r\\n"
                      b"content-length: %d\\r\\n\\r\\n" % len(body) + body)
            print(s.recv(65536)[:12], flush=True)
        ask(b'{"first":true}')
        sys.stdin.readline()
        ask(b'{"again":true}')
    """
    proc = run_client(source, code, ADDR)
    proc.stdout.readline()
    mine = lambda e: e.get("pid") == proc.pid  # noqa: E731
    first = collect(source, lambda e: mine(e) and e["event_type"] == "DATA_WRITE")[0]
    source.feedback({"cmd": "verdict", "pid": proc.pid, "conn_id": first["conn_id"], "capture": False})
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    _finish(proc, source)
    collect(source, lambda e: mine(e) and e["event_type"] == "TCP_CLOSE")
    drain(source, 0.2)
    data = [e for e in source.seen if mine(e) and e["event_type"].startswith("DATA_")]
    assert all(b"again" not in e["payload"] for e in data)


def _check_request_and_answer(source, proc, tls_server, marker: bytes) -> None:
    _finish(proc, source)
    mine = lambda e: e.get("pid") == proc.pid  # noqa: E731
    writes = collect(source, lambda e: mine(e) and e["event_type"] == "TLS_DATA_WRITE")
    reads = collect(source, lambda e: mine(e) and e["event_type"] == "TLS_DATA_READ")
    request = next(e for e in writes if marker in e["payload"])
    assert request["sni"] == SNI
    assert request["dst_port"] == tls_server.port and request["dst_ip"] == ADDR
    answer = b"".join(e["payload"] for e in reads)
    assert answer.startswith(b"HTTP/1.1 200 OK") and RESPONSE_BODY in answer
    assert all(e["dst_port"] == tls_server.port for e in reads)


def test_curl_is_captured(source, tls_server, cert):
    """curl's OpenSSL back end does its own socket I/O through a custom BIO."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is missing: apt-get install -y curl (deploy/setup-host.sh)")
    proc = start(
        source,
        [curl, "-sS", "--http1.1", "--cacert", str(cert[0]), "--resolve",
         f"{SNI}:{tls_server.port}:{ADDR}", "-H", "content-type: application/json",
         "-d", '{"model":"gpt-4o","curl":1}', f"https://{SNI}:{tls_server.port}/v1/chat/completions"])
    _check_request_and_answer(source, proc, tls_server, b'"curl":1')


def test_asyncio_memory_bio_client_is_captured(source, tls_server, cert):
    """asyncio's TLS runs OpenSSL over memory BIOs: no SSL_set_fd at all."""
    code = """
        import asyncio, ssl, sys
        async def main():
            ctx = ssl.create_default_context(cafile=sys.argv[2])
            ctx.check_hostname = False
            r, w = await asyncio.open_connection(sys.argv[3], int(sys.argv[1]), ssl=ctx,
                                                 server_hostname=sys.argv[4])
            body = b'{"model":"gpt-4o","asyncio":1}'
            w.write(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\ncontent-length: %d\\r\\n\\r\\n"
                    % len(body) + body)
            print(await r.read(200))
            w.close()
        asyncio.run(main())
    """
    proc = run_client(source, code, str(tls_server.port), str(cert[0]), ADDR, SNI)
    _check_request_and_answer(source, proc, tls_server, b'"asyncio":1')


def test_program_stats_count_the_tls_probes(source, tls_server, cert):
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    previous = path.read_text().strip()
    path.write_text("1")
    try:
        before = source.program_stats()
        proc = _tls_client(source, tls_server, cert)
        _finish(proc, source)
        after = source.program_stats()
    finally:
        path.write_text(previous)
    # one program at entry and return where the kernel has uprobe sessions, else the
    # return probe's own
    name = "tls_write_ex_session" if source.uprobes.session_count else "tls_write_return"
    runs = after[name][0] - before.get(name, (0, 0))[0]
    spent = after[name][1] - before.get(name, (0, 0))[1]
    assert runs >= 1 and spent > 0


def test_private_libssl_copy_is_probed_as_it_is_written(source, tls_server, cert, tmp_path):
    """A libssl copy (never seen before) is probed while it is being written by another
    process, before anyone loads it: a client that loads it then is seen from its first
    write. (A client that loads a copy in the same millisecond as the copy is made is a
    race the monitor does not promise to win without --enforce, which holds the loader's
    open until the probes are in: tested in test_enforcement.py.)"""
    system = Path("/usr/lib/x86_64-linux-gnu")
    for name in ("libssl.so.3", "libcrypto.so.3"):
        subprocess.run(["cp", str(system / name), str(tmp_path / name)], check=True)
    copy = str(tmp_path / "libssl.so.3")
    deadline = time.monotonic() + 20
    while copy not in set(source._probed.values()):
        assert time.monotonic() < deadline, f"the copy was not probed: {source.attach_errors}"
        source.seen.extend(source.poll(0.05))
    proc = start(source, [sys.executable, "-c", textwrap.dedent(PY_CLIENT), str(tls_server.port),
                          "100", "0", str(cert[0]), ADDR, SNI],
                 env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})
    _finish(proc, source)
    maps_lib = [e for e in source.seen if e.get("pid") == proc.pid]
    writes = collect(source, lambda e: e.get("pid") == proc.pid and e["event_type"] == "TLS_DATA_WRITE")
    assert writes[0]["payload"].startswith(b"POST /v1/chat/completions"), maps_lib


def test_new_node_binary_is_probed_at_its_exec(source, tls_server, tmp_path):
    """A node copy the monitor never saw is probed at its exec; its first request leaves
    half a second later (a program's very first milliseconds are a race the monitor does
    not promise to win without --enforce)."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.fail("node is missing: apt-get install -y nodejs (deploy/setup-host.sh)")
    copy = tmp_path / "agent-node-now"
    shutil.copy2(node, copy)
    _check_node(source, _node_client(source, str(copy), tls_server, 500), tls_server)
