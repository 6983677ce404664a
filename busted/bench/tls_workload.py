"""The traced programs of `busted bench probes`: a loopback TLS server and the client
processes whose speed the benchmark compares with and without the monitor.

Run as ``python -m busted.bench.tls_workload serve|client ...`` by :mod:`busted.bench.probes`
(each client is a fresh process, so the monitor must pick it up as a process started
after it). The traffic looks like LLM traffic (SNI api.openai.com, ``POST
/v1/chat/completions`` with JSON, SSE answers) so the monitor keeps copying it, as it
would for the conversations it exists to see; uninteresting traffic gets cheaper after
its verdict, which would flatter the figures.

Server (127.0.0.1, one thread per connection, keep-alive HTTP/1.1):
- a normal request gets a ~400-byte JSON completion at once;
- ``"stream": true`` gets 10 SSE chunks spread over ``x-bench-stream-ms`` (default 20);
- ``x-bench-burst: N`` gets N records of 100 bytes (N separate writes);
- a request whose body never ends (Content-Length far ahead) is a sink: read and dropped.

Client protocol on stdin/stdout: it connects, warms up, prints ``ready``; each ``warm``
line makes one more request (``warmed``), ``go`` runs the measurement and prints one JSON
line. Workloads:
- ``percall``: CPU time (and wall time) per ``SSL_write_ex`` (100-byte ``send`` into the
  sink) and per ``SSL_read_ex`` (``recv`` of 100-byte records already in the socket);
  with ``--ordinary`` the same calls on connections the monitor judges uninteresting
  (SNI downloads.example.net, a ``GET`` first, an upload into the sink), measured once
  the verdict has had time to reach the kernel;
- ``loop``: requests/s of a tight request/response loop with SIZE-byte requests;
- ``agent``: requests/s of 4 connections doing streamed requests (~20 ms answers);
- ``latency``: an LLM-like request loop for ``busted bench enforce``: sequential
  SIZE-byte chat requests on the one keep-alive connection, the wall time of each
  (write to whole answer) kept, reported as p50/p90/p99/mean/max and requests/s.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import ssl
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from busted.bench.measure import percentile

SNI = "api.openai.com"
ORDINARY_SNI = "downloads.example.net"  # no provider's host: the classifier's verdict skips it
VERDICT_WAIT_S = 0.5  # a connection's first request to its verdict in the kernel: ~ms
RECORD = 100  # bytes per write in the per-call measurements
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux; root may exceed net.core.*mem_max
BIG_BUFFER = 16 << 20  # so neither side ever blocks on the other during a timed run
STREAM_CHUNKS = 10
SINK_LENGTH = 1 << 40


def make_certificates(directory: Path, host: str = SNI,
                      also: str = "") -> tuple[Path, Path, Path]:
    """A CA and a certificate for ``host`` (and the subjectAltName entries ``also``, e.g.
    ``IP:127.0.0.1``) signed by it; returns (ca, cert, key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=busted bench CA", "-addext", "basicConstraints=critical,CA:TRUE")
    names = ",".join(filter(None, (f"DNS:{host}", also)))
    (directory / "leaf.ext").write_text(f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n")
    run("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={host}")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "1", "-extfile", "leaf.ext")
    return directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key"


# --- server ------------------------------------------------------------------------------

def _read_head(conn: ssl.SSLSocket, buf: bytearray) -> tuple[str, dict[str, str]] | None:
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n")
    lines = buf[:end].decode("latin-1").split("\r\n")
    del buf[: end + 4]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _serve_connection(conn: ssl.SSLSocket) -> None:
    buf = bytearray()
    answer = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "A short answer " * 8}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }).encode()
    while True:
        head = _read_head(conn, buf)
        if head is None:
            return
        _, headers = head
        length = int(headers.get("content-length", "0"))
        if length == SINK_LENGTH:  # the sink: drop everything until the client hangs up
            while conn.recv(65536):
                pass
            return
        while len(buf) < length:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        body = bytes(buf[:length])
        del buf[:length]
        if "x-bench-burst" in headers:
            n = int(headers["x-bench-burst"])
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"content-length: %d\r\n\r\n" % (n * RECORD))
            record = (b"data: " + b"x" * (RECORD - 8) + b"\n\n")[:RECORD]
            for _ in range(n):
                conn.sendall(record)
        elif b'"stream": true' in body or b'"stream":true' in body:
            pause = float(headers.get("x-bench-stream-ms", "20")) / 1000 / STREAM_CHUNKS
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            for i in range(STREAM_CHUNKS):
                time.sleep(pause)
                piece = (b'data: {"choices":[{"index":0,"delta":{"content":"token %d "}}]}\n\n' % i)
                conn.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
            conn.sendall(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%b" % (len(answer), answer))


def serve(cert: str, key: str, port_file: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    Path(port_file).write_text(str(listener.getsockname()[1]))

    def handle(raw: socket.socket) -> None:
        raw.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BIG_BUFFER)
        raw.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, BIG_BUFFER)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with ctx.wrap_socket(raw, server_side=True) as conn:
                _serve_connection(conn)
        except (OSError, ssl.SSLError):
            pass

    while True:
        raw, _ = listener.accept()
        threading.Thread(target=handle, args=(raw,), daemon=True).start()


# --- client ------------------------------------------------------------------------------

class Client:
    def __init__(self, port: int, cafile: str, ordinary: bool = False) -> None:
        self.port = port
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.ordinary = ordinary
        self.sni = ORDINARY_SNI if ordinary else SNI

    def connect(self, nodelay: bool = True) -> ssl.SSLSocket:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BIG_BUFFER)
        raw.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, BIG_BUFFER)
        # Nagle off for request/response loops (latency); on for the sink, where
        # coalescing keeps the socket's cost per 100-byte write small next to the probes'.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        raw.connect(("127.0.0.1", self.port))
        return self.ctx.wrap_socket(raw, server_hostname=self.sni)

    def request(self, size: int = 512, extra: str = "") -> bytes:
        """An LLM request, or on an ordinary client a download request."""
        if self.ordinary:
            return (f"GET /files/data.bin HTTP/1.1\r\nHost: {ORDINARY_SNI}\r\n{extra}"
                    f"\r\n").encode()
        return request_bytes(size, extra=extra)

    def sink_head(self) -> bytes:
        """The head of a request whose body never ends (the server drops it)."""
        if self.ordinary:
            return (f"PUT /files/upload.bin HTTP/1.1\r\nHost: {ORDINARY_SNI}\r\n"
                    f"Content-Type: application/octet-stream\r\n"
                    f"Content-Length: {SINK_LENGTH}\r\n\r\n").encode()
        return (request_bytes(0).split(b"Content-Length")[0]
                + b"Content-Length: %d\r\n\r\n" % SINK_LENGTH
                + b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "')


def request_bytes(size: int, stream: bool = False, extra: str = "") -> bytes:
    """An OpenAI chat request of about ``size`` bytes of JSON."""
    head = {"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "system", "content": "You are a benchmark."},
                         {"role": "user", "content": ""}]}
    filler = max(0, size - len(json.dumps(head)))
    head["messages"][1]["content"] = ("lorem ipsum " * (filler // 12 + 1))[:filler]
    body = json.dumps(head).encode()
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {SNI}\r\n"
            f"Authorization: Bearer sk-bench-0000\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def read_response(conn: ssl.SSLSocket, buf: bytearray) -> int:
    """Read one response (Content-Length or chunked); return the number of recv calls."""
    calls = 0
    while b"\r\n\r\n" not in buf:
        buf += conn.recv(65536)
        calls += 1
    end = buf.index(b"\r\n\r\n")
    head = buf[:end].lower()
    del buf[: end + 4]
    if b"transfer-encoding: chunked" in head:
        while not buf.endswith(b"0\r\n\r\n"):
            buf += conn.recv(65536)
            calls += 1
        buf.clear()
        return calls
    length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
    while len(buf) < length:
        buf += conn.recv(65536)
        calls += 1
    del buf[:length]
    return calls


def _wait_in_socket(conn: ssl.SSLSocket, at_least: int) -> None:
    """Wait until the kernel holds ``at_least`` bytes for us and stops growing."""
    fd, last, stable_since = conn.fileno(), -1, time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        have = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
        now = time.monotonic()
        if have != last:
            last, stable_since = have, now
        elif have >= at_least and now - stable_since > 0.03:
            return
        time.sleep(0.002)


def run_percall(client: Client, conn: ssl.SSLSocket, calls: int, repeats: int = 3) -> dict[str, float]:
    """Time per call, as CPU time of this thread (user + system: a uprobe's trap and BPF
    program are charged to the traced thread) and as wall time; the best of ``repeats``.
    CPU time is what makes the figure usable on a shared machine (being descheduled does
    not count), and the minimum drops what other load adds (cache misses, interrupts)."""
    best: dict[str, float] = {}
    total_calls = 0
    for _ in range(repeats):
        once = _percall_once(client, conn, calls)
        total_calls += int(once.pop("calls"))
        for key, value in once.items():
            best[key] = min(best.get(key, value), value)
    return {**best, "writes": calls, "repeats": repeats, "total_calls": total_calls}


def _percall_once(client: Client, conn: ssl.SSLSocket, calls: int) -> dict[str, float]:
    sink = client.connect(nodelay=False)
    if client.ordinary:  # its first request earns the connection its verdict
        sink.sendall(client.request())
        read_response(sink, bytearray())
        time.sleep(VERDICT_WAIT_S)
    sink.sendall(client.sink_head())
    piece = b"a" * RECORD
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        sink.send(piece)  # one SSL_write_ex each
    write_cpu, write_wall = time.thread_time() - cpu, time.perf_counter() - wall
    sink.close()
    buf = bytearray()
    read_cpu = read_wall = 0.0
    reads, batch = 0, 5000
    for _ in range(max(1, calls // batch)):
        conn.sendall(client.request(200, extra=f"x-bench-burst: {batch}\r\n"))
        _wait_in_socket(conn, batch * RECORD)
        while b"\r\n\r\n" not in buf:  # the header record, not timed
            buf += conn.recv(65536)
        got = len(buf) - buf.index(b"\r\n\r\n") - 4
        buf.clear()
        wall, cpu = time.perf_counter(), time.thread_time()
        while got < batch * RECORD:
            got += len(conn.recv(65536))  # one SSL_read_ex each, one record each
            reads += 1
        read_cpu += time.thread_time() - cpu
        read_wall += time.perf_counter() - wall
    reads = max(1, reads)
    return {"write_us": write_cpu / calls * 1e6, "read_us": read_cpu / reads * 1e6,
            "write_wall_us": write_wall / calls * 1e6, "read_wall_us": read_wall / reads * 1e6,
            "calls": calls + reads}


def run_loop(conn: ssl.SSLSocket, size: int, duration: float) -> dict[str, float]:
    request, buf, count = request_bytes(size), bytearray(), 0
    started = time.perf_counter()
    deadline = started + duration
    while True:
        conn.sendall(request)
        read_response(conn, buf)
        count += 1
        if count % 16 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - started
    return {"requests": count, "seconds": elapsed, "requests_per_s": count / elapsed}


def run_agent(client: Client, duration: float, connections: int = 4,
              stream_ms: float = 20.0) -> dict[str, float]:
    counts = [0] * connections
    request = request_bytes(2048, stream=True, extra=f"x-bench-stream-ms: {stream_ms}\r\n")
    conns = [client.connect() for _ in range(connections)]
    for conn in conns:  # warm every connection once
        conn.sendall(request)
        read_response(conn, bytearray())
    started = time.perf_counter()
    deadline = started + duration

    def worker(i: int) -> None:
        buf = bytearray()
        while time.perf_counter() < deadline:
            conns[i].sendall(request)
            read_response(conns[i], buf)
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return {"requests": sum(counts), "seconds": elapsed, "requests_per_s": sum(counts) / elapsed}


def run_latency(conn: ssl.SSLSocket, size: int, duration: float,
                stream_ms: float = 0.0, pause_ms: float = 0.0) -> dict[str, float]:
    """Sequential requests, each timed from its write to the end of its answer.
    ``stream_ms`` > 0 asks for answers streamed over that long (as a model would);
    ``pause_ms`` is a pause between an answer and the next request (an agent's own work)."""
    extra = f"x-bench-stream-ms: {stream_ms}\r\n" if stream_ms > 0 else ""
    request, buf = request_bytes(size, stream=stream_ms > 0, extra=extra), bytearray()
    latencies: list[float] = []
    clock = time.perf_counter
    started = clock()
    deadline = started + duration
    while True:
        sent = clock()
        conn.sendall(request)
        read_response(conn, buf)
        done = clock()
        latencies.append(done - sent)
        if done >= deadline:
            break
        if pause_ms > 0:
            time.sleep(pause_ms / 1000)
    elapsed = clock() - started
    latencies.sort()

    def ms(q: float) -> float:
        return round(percentile(latencies, q) * 1000, 4)

    return {"requests": len(latencies), "seconds": elapsed,
            "requests_per_s": len(latencies) / elapsed, "request_bytes": len(request),
            "p50_ms": ms(0.50), "p90_ms": ms(0.90), "p99_ms": ms(0.99),
            "max_ms": round(latencies[-1] * 1000, 4),
            "mean_ms": round(sum(latencies) / len(latencies) * 1000, 4)}


def client_main(args: argparse.Namespace) -> None:
    client = Client(args.port, args.cafile, ordinary=args.ordinary)
    conn = client.connect()
    buf = bytearray()
    warm = client.request()

    def warm_up() -> None:
        conn.sendall(warm)
        read_response(conn, buf)

    warm_up()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "warm":
            warm_up()
            print("warmed", flush=True)
        elif line.strip() == "go":
            break
    else:
        return
    if args.workload == "percall":
        if client.ordinary:
            time.sleep(VERDICT_WAIT_S)  # the warm-up request's verdict reaches the kernel
        result = run_percall(client, conn, args.calls)
    elif args.workload == "loop":
        result = run_loop(conn, args.size, args.duration)
    elif args.workload == "latency":
        result = run_latency(conn, args.size, args.duration, args.stream_ms, args.pause_ms)
    else:
        result = run_agent(client, args.duration)
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m busted.bench.tls_workload")
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--port-file", required=True)
    c = sub.add_parser("client")
    c.add_argument("workload", choices=("percall", "loop", "agent", "latency"))
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--cafile", required=True)
    c.add_argument("--calls", type=int, default=20000)
    c.add_argument("--ordinary", action="store_true",
                   help="percall: on connections the monitor judges uninteresting")
    c.add_argument("--size", type=int, default=1024)
    c.add_argument("--duration", type=float, default=3.0)
    c.add_argument("--stream-ms", type=float, default=0.0,
                   help="latency: answers streamed over this many ms (0: at once)")
    c.add_argument("--pause-ms", type=float, default=0.0,
                   help="latency: pause between an answer and the next request")
    args = parser.parse_args()
    if args.role == "serve":
        serve(args.cert, args.key, args.port_file)
    else:
        client_main(args)


if __name__ == "__main__":
    main()
