"""The Python clients of the privileged tests, one sub-command each.

Runs inside the client namespace (see ../namespace.py) with the test CA trusted through
the environment. Prints one JSON line at the end: its own pid and comm (what the monitor
must report) plus what it got back. Exit status 0 only when the exchange succeeded.

    pyclient.py raw URL [--body-file F] [--split N] [--repeat N] [--delay S] [--header 'K: V']
                                                                        (Python ssl)
    pyclient.py httpx URL [--body-file F] [--header 'K: V']
    pyclient.py openai --model M --prompt P [--stream]
    pyclient.py anthropic --model M --prompt P [--stream]
    pyclient.py download URL                                            (Python ssl)
    pyclient.py dns NAME --server ADDR [--port 53]
    pyclient.py ollama URL --model M --prompt P [--no-stream]           (plain HTTP)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

API_KEY = "sk-test-SECRET-a1b2c3d4e5f6a7b8c9d0"  # must never appear in what busted emits


def _report(**fields) -> None:
    me = {"pid": os.getpid(), "comm": Path("/proc/self/comm").read_text().strip()}
    print(json.dumps({**me, **fields}), flush=True)


def _read_response(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response (Content-Length or chunked)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before the response headers")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}

    def more() -> bytes:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed in the middle of the body")
        return data

    if "chunked" in headers.get("transfer-encoding", ""):
        out = b""
        while True:
            while b"\r\n" not in body:
                body += more()
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(body) < size + 2:
                body += more()
            out, body = out + body[:size], body[size + 2 :]
            if size == 0:
                return status, out
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += more()
    return status, body


def _request_bytes(url: str, method: str, body: bytes, headers: list[str]) -> bytes:
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.hostname}", "User-Agent: busted-test/1",
             "Accept: */*", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _connect(url: str) -> ssl.SSLSocket:
    parts = urlsplit(url)
    ctx = ssl.create_default_context()  # trusts SSL_CERT_FILE (the test CA)
    raw = socket.create_connection((parts.hostname, parts.port or 443), timeout=30)
    return ctx.wrap_socket(raw, server_hostname=parts.hostname)


def cmd_raw(args) -> int:
    import time

    time.sleep(args.delay)  # a long-lived process: its first request comes later
    body = Path(args.body_file).read_bytes() if args.body_file else b""
    data = _request_bytes(args.url, args.method or ("POST" if body else "GET"), body, args.header)
    total = 0
    with _connect(args.url) as sock:
        for _ in range(args.repeat):  # --repeat: the same request again on this connection
            # One sendall per piece: each is one SSL_write_ex call.
            step = -(-len(data) // args.split)
            for i in range(0, len(data), step):
                sock.sendall(data[i : i + step])
            status, answer = _read_response(sock)
            total += len(answer)
            if status != 200:
                break
    _report(status=status, body=answer.decode("utf-8", "replace")[:65536], body_len=len(answer),
            total_len=total, sni=urlsplit(args.url).hostname)
    return 0 if status == 200 else 1


def cmd_httpx(args) -> int:
    import httpx

    body = Path(args.body_file).read_bytes() if args.body_file else b""
    headers = dict(h.split(": ", 1) for h in args.header)
    with httpx.Client(timeout=30) as client:
        resp = client.request(args.method or ("POST" if body else "GET"), args.url, content=body,
                              headers=headers)
    _report(status=resp.status_code, body=resp.text[:65536], body_len=len(resp.content))
    return 0 if resp.status_code == 200 else 1


def cmd_openai(args) -> int:
    import openai

    client = openai.OpenAI(api_key=API_KEY, max_retries=0, timeout=30)
    messages = [{"role": "system", "content": "You are a test."},
                {"role": "user", "content": args.prompt}]
    if args.stream:
        stream = client.chat.completions.create(model=args.model, messages=messages, stream=True)
        answer = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    else:
        resp = client.chat.completions.create(model=args.model, messages=messages)
        answer = resp.choices[0].message.content
    _report(status=200, answer=answer)
    return 0


def cmd_anthropic(args) -> int:
    import anthropic

    client = anthropic.Anthropic(api_key=API_KEY, max_retries=0, timeout=30)
    messages = [{"role": "user", "content": args.prompt}]
    if args.stream:
        with client.messages.stream(model=args.model, max_tokens=256, messages=messages) as stream:
            answer = "".join(stream.text_stream)
    else:
        resp = client.messages.create(model=args.model, max_tokens=256, messages=messages)
        answer = "".join(block.text for block in resp.content if block.type == "text")
    _report(status=200, answer=answer)
    return 0


def cmd_download(args) -> int:
    with _connect(args.url) as sock:
        sock.sendall(_request_bytes(args.url, "GET", b"", []))
        status, body = _read_response(sock)
    _report(status=status, bytes=len(body))
    return 0 if status == 200 else 1


def cmd_dns(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dns_responder import build_query, parse_answer

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(build_query(args.name), (args.server, args.port))
        packet, _ = sock.recvfrom(4096)
    rcode, addrs = parse_answer(packet)
    _report(status=rcode, addrs=addrs)
    return 0 if rcode == 0 else 1


def cmd_ollama(args) -> int:
    import http.client

    parts = urlsplit(args.url)
    chat = parts.path.startswith("/api/chat")
    payload: dict = {"model": args.model, "stream": not args.no_stream}
    if chat:
        payload["messages"] = [{"role": "user", "content": args.prompt}]
    else:
        payload["prompt"] = args.prompt
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 11434, timeout=30)
    conn.request("POST", parts.path, body=json.dumps(payload),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    answer = ""
    for line in resp.read().decode().splitlines():
        if line.strip():
            obj = json.loads(line)
            answer += (obj.get("message") or {}).get("content", "") if chat else obj.get("response", "")
    conn.close()
    _report(status=resp.status, answer=answer)
    return 0 if resp.status == 200 else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("raw", "httpx"):
        p = sub.add_parser(name)
        p.add_argument("url")
        p.add_argument("--body-file")
        p.add_argument("--method")
        p.add_argument("--split", type=int, default=1)
        p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before connecting")
        p.add_argument("--repeat", type=int, default=1, help="requests sent on the connection")
        p.add_argument("--header", action="append", default=[])
    for name in ("openai", "anthropic"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True)
        p.add_argument("--prompt", required=True)
        p.add_argument("--stream", action="store_true")
    p = sub.add_parser("download")
    p.add_argument("url")
    p = sub.add_parser("dns")
    p.add_argument("name")
    p.add_argument("--server", required=True)
    p.add_argument("--port", type=int, default=53)
    p = sub.add_parser("ollama")
    p.add_argument("url")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--no-stream", action="store_true")
    args = parser.parse_args()
    return globals()[f"cmd_{args.cmd}"](args)


if __name__ == "__main__":
    sys.exit(main())
