"""`busted bench classify`: classifications per second of the real classifier on one
core, for a few shapes of traffic:

- ``chat-2k``: a typical 2 KiB OpenAI chat request as the Python SDK sends it (HTTP/1.1,
  Stainless headers, system prompt and a few turns) — the headline figure;
- ``anthropic-sse``: a streamed Anthropic response (chunked SSE);
- ``h2-request``: the same chat request over HTTP/2 (preface, SETTINGS, HPACK);
- ``mcp-call``: an MCP ``tools/call`` over Streamable HTTP;
- ``other-http``: a plain GET to a non-LLM host;
- ``stage-split``: the chat request split in 4 captures, through the classify stage's
  reassembler (what the worker pays per request).

One thread, pinned to one CPU when possible. ``per s (cpu)`` is calls per second of
process CPU time over the run; ``best per s`` is the fastest batch of 100 calls, i.e.
what the core does when nothing else is running on it (other load on a shared VM
inflates CPU time too, through caches and hyper-threads).
"""

# ruff: noqa: E501  (sample requests read best one per line)
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import click

DEFAULT_SECONDS = 2.0


def chat_request(size: int = 2048) -> bytes:
    """A chat request of about ``size`` bytes, as openai-python writes it."""
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAccept-Encoding: gzip, deflate\r\n"
        "Connection: keep-alive\r\nAuthorization: Bearer sk-proj-FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE0123456789\r\n"
        "accept: application/json\r\ncontent-type: application/json\r\nuser-agent: OpenAI/Python 1.99.0\r\n"
        "x-stainless-lang: python\r\nx-stainless-package-version: 1.99.0\r\nx-stainless-os: Linux\r\n"
        "x-stainless-arch: x64\r\nx-stainless-runtime: CPython\r\nx-stainless-runtime-version: 3.11.2\r\n"
        "x-stainless-async: false\r\nx-stainless-retry-count: 0\r\nx-stainless-read-timeout: 600\r\n"
        "Content-Length: {length}\r\n\r\n"
    )
    messages = [
        {
            "role": "system",
            "content": "You are a senior Linux kernel engineer. Answer precisely and cite the subsystem.",
        },
        {"role": "user", "content": "How do BPF ring buffers differ from perf buffers?"},
        {
            "role": "assistant",
            "content": "Ring buffers are shared across CPUs and preserve ordering; perf buffers are per-CPU.",
        },
        {"role": "user", "content": ""},
    ]
    body = {"model": "gpt-4o-mini", "messages": messages, "temperature": 0.2, "stream": True}
    filler = "Explain with an example of reserving and submitting a record from a tracepoint program. "
    while True:
        data = json.dumps(body, separators=(",", ":")).encode()
        request = head.format(length=len(data)).encode() + data
        if len(request) >= size:
            return request
        messages[-1]["content"] += filler[: size - len(request)]


def _shapes() -> dict[str, Callable[[], Callable[[], Any]]]:
    from busted.classifier import classify

    def chat() -> Callable[[], Any]:
        data = chat_request()
        return lambda: classify(data, "write", "api.openai.com")

    def sse() -> Callable[[], Any]:
        events = [("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                                          "model": "claude-sonnet-4-5", "usage": {"input_tokens": 25, "output_tokens": 1}}})]  # fmt: skip
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"word{i} "}})
                   for i in range(20)]  # fmt: skip
        events += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 21}}),
                   ("message_stop", {"type": "message_stop"})]  # fmt: skip
        body = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)
        events_raw = [c + b"\n\n" for c in body.split(b"\n\n") if c]  # one SSE event per chunk
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in events_raw) + b"0\r\n\r\n"
        data = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + chunks
        )
        return lambda: classify(data, "read", "api.anthropic.com")

    def h2_request() -> Callable[[], Any]:
        import h2.config
        import h2.connection

        head, _, body = chat_request().partition(b"\r\n\r\n")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        headers = [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":scheme", "https"),
            (":authority", "api.openai.com"),
        ]
        for line in head.split(b"\r\n")[2:]:
            name, _, value = line.decode().partition(":")
            if name.lower() not in ("connection", "content-length"):
                headers.append((name.lower(), value.strip()))
        conn.send_headers(1, headers)
        conn.send_data(1, body, end_stream=True)
        data = conn.data_to_send()
        return lambda: classify(data, "write", "api.openai.com")

    def mcp() -> Callable[[], Any]:
        body = json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                           "params": {"name": "search_docs", "arguments": {"query": "ring buffer reserve", "limit": 5}}}).encode()  # fmt: skip
        data = (b"POST /mcp HTTP/1.1\r\nHost: localhost:8931\r\ncontent-type: application/json\r\n"
                b"accept: application/json, text/event-stream\r\nmcp-session-id: 7d0c\r\nmcp-protocol-version: 2025-06-18\r\n"
                b"content-length: %d\r\n\r\n%s") % (len(body), body)  # fmt: skip
        return lambda: classify(data, "write")

    def other() -> Callable[[], Any]:
        data = (b"GET /assets/app.js HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
                b"Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nCookie: sid=abcdef123456\r\n\r\n")  # fmt: skip
        return lambda: classify(data, "write", "www.example.com")

    def stage_split() -> Callable[[], Any]:
        from busted.classifier.reassembly import Reassembler

        data = chat_request()
        step = len(data) // 4 + 1
        pieces = [data[i : i + step] for i in range(0, len(data), step)]
        reassembler = Reassembler()
        events = [{"event_type": "TLS_DATA_WRITE", "direction": "write", "pid": 1, "conn_id": 1, "sni": "api.openai.com",
                   "payload": piece} for piece in pieces]  # fmt: skip

        def run() -> None:
            for event in events:
                reassembler.feed(event, 0.0)

        return run

    return {
        "chat-2k": chat,
        "anthropic-sse": sse,
        "h2-request": h2_request,
        "mcp-call": mcp,
        "other-http": other,
        "stage-split": stage_split,
    }


def measure(fn: Callable[[], Any], seconds: float) -> dict[str, float]:
    """Run ``fn`` for about ``seconds`` of CPU.

    ``per_s`` comes from the process CPU time over the whole run; ``best_per_s`` from
    the fastest batch of 100 calls (wall clock): on a machine shared with other work,
    the second is what one core does when it actually gets the core, the first is
    what it did on average.
    """
    for _ in range(200):  # warm caches and lazy imports
        fn()
    count = 0
    batch = 100
    best = float("inf")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < seconds:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, time.perf_counter() - t0)
        count += batch
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    return {
        "per_s": round(count / cpu),
        "us_each": round(cpu / count * 1e6, 1),
        "best_per_s": round(batch / best),
        "best_us_each": round(best / batch * 1e6, 1),
        "wall_per_s": round(count / wall),
        "runs": count,
    }


@click.command("classify")
@click.option(
    "--seconds", type=float, default=DEFAULT_SECONDS, show_default=True, help="CPU seconds per shape."
)
@click.option("--shape", "shapes", multiple=True, help="Only these shapes (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def classify(seconds: float, shapes: tuple[str, ...], as_json: bool) -> None:
    """Classifications/s of typical requests on one core.

    \b
    Examples:
      busted bench classify
      busted bench classify --json --seconds 5
      busted bench classify --shape chat-2k
    """
    from busted.errors import UsageError

    available = _shapes()
    unknown = set(shapes) - set(available)
    if unknown:
        raise UsageError(
            f"unknown shape(s): {', '.join(sorted(unknown))}", f"Choose from: {', '.join(available)}"
        )
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the claim says
    except (AttributeError, OSError):
        pass
    results: dict[str, Any] = {}
    for name, build in available.items():
        if shapes and name not in shapes:
            continue
        results[name] = measure(build(), seconds)
        if name == "chat-2k":
            results[name]["bytes"] = len(chat_request())
    report = {"bench": "classify", "seconds_per_shape": seconds, "results": results}
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{'shape':16} {'per s (cpu)':>12} {'µs each':>9} {'best per s':>11} {'best µs':>8}")
    for name, r in results.items():
        click.echo(
            f"{name:16} {r['per_s']:>12,} {r['us_each']:>9} {r['best_per_s']:>11,} {r['best_us_each']:>8}"
        )
