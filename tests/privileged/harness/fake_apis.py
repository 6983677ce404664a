"""What the fake servers answer: the providers' wire formats, small but faithful.

- OpenAI ``POST /v1/chat/completions`` (JSON, or SSE ``data:`` chunks ending in ``[DONE]``);
- OpenAI ``/v1/responses`` (SSE, or a WebSocket as Codex uses it: :mod:`.responses_api`);
- Anthropic ``POST /v1/messages`` (JSON, or SSE with named events);
- Ollama ``POST /api/chat`` and ``/api/generate`` (NDJSON stream by default, as Ollama does);
- Gemini ``POST /v1beta/models/M:streamGenerateContent?alt=sse`` (SSE ``data:`` chunks),
  ``:generateContent`` (JSON) and ``:countTokens``, as Gemini CLI calls them;
- ``GET /download?bytes=N&chunk=K&pause_ms=P`` — a large, paced, uninteresting body;
- anything else: a small JSON acknowledgement.

Every answer carries a text that names the request (:func:`answer_for`), recorded on the
request, so a test can look for that exact text in the captured response. In a stream
the text travels in one delta, so it is contiguous in what the client reads.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from urllib.parse import parse_qs, urlsplit

from . import responses_api
from .http_server import Request, Response


def answer_for(request: Request) -> str:
    digest = hashlib.sha1(request.body).hexdigest()[:12]
    return f"Fake answer {digest} from the test server."


def _json(status: int, obj: object, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = [("content-type", "application/json"), *(extra or [])]
    return Response(status, headers, json.dumps(obj).encode())


def _sse(events: list[tuple[str | None, object]]) -> list[bytes]:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode())
    return out


def _body_json(request: Request) -> dict:
    try:
        value = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def openai_chat(request: Request, pause_s: float = 0.0) -> Response:
    body = _body_json(request)
    model = body.get("model", "gpt-4o-mini")
    answer = request.answer = answer_for(request)
    # A test that needs a large LLM answer (several MiB) asks for it in a header.
    pad = int(request.headers.get("x-test-answer-bytes", "0") or 0)
    if pad:
        answer = request.answer = answer + " " + ("lorem ipsum " * (pad // 12 + 1))[:pad]
    created = int(time.time())
    usage = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
    extra = [("x-request-id", "req_test"), ("openai-processing-ms", "3")]
    if not body.get("stream"):
        return _json(200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        }, extra)

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events: list[tuple[str | None, object]] = [
        (None, chunk({"role": "assistant", "content": ""})),
        (None, chunk({"content": "Sure"})),
        (None, chunk({"content": ". "})),
        (None, chunk({"content": answer})),
        (None, chunk({}, "stop")),
    ]
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {**chunk({}), "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return Response(200, [("content-type", "text/event-stream"), *extra],
                    stream=_sse(events), pause_s=pause_s)


def anthropic_messages(request: Request, pause_s: float = 0.0) -> Response:
    body = _body_json(request)
    model = body.get("model", "claude-3-5-sonnet-latest")
    answer = request.answer = answer_for(request)
    message = {"id": "msg_test", "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 12, "output_tokens": 1}}
    extra = [("request-id", "req_test")]
    if not body.get("stream"):
        done = {**message, "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 12, "output_tokens": 9}}
        return _json(200, done, extra)
    events: list[tuple[str | None, object]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Sure. "}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": answer}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return Response(200, [("content-type", "text/event-stream"), *extra],
                    stream=_sse(events), pause_s=pause_s)


def ollama(request: Request, pause_s: float = 0.0) -> Response:
    body = _body_json(request)
    model = body.get("model", "llama3.2")
    answer = request.answer = answer_for(request)
    chat = request.path.startswith("/api/chat")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())

    def piece(text: str, done: bool) -> dict:
        obj: dict = {"model": model, "created_at": stamp, "done": done}
        if chat:
            obj["message"] = {"role": "assistant", "content": text}
        else:
            obj["response"] = text
        if done:
            obj.update(done_reason="stop", total_duration=1_000_000, prompt_eval_count=12,
                       eval_count=9)
        return obj

    if body.get("stream") is False:
        return _json(200, piece(answer, True))
    lines = [piece("Sure. ", False), piece(answer, False), piece("", True)]
    return Response(200, [("content-type", "application/x-ndjson")],
                    stream=[json.dumps(obj).encode() + b"\n" for obj in lines], pause_s=pause_s)


def gemini(request: Request, pause_s: float = 0.0) -> Response:
    """The Gemini API: the model is in the path (``/v1beta/models/M:method``)."""
    path = urlsplit(request.path).path
    model, _, method = path.rsplit("/", 1)[-1].partition(":")
    if method == "countTokens":
        request.answer = "12 tokens"
        return _json(200, {"totalTokens": 12})
    answer = request.answer = answer_for(request)
    usage = {"promptTokenCount": 12, "candidatesTokenCount": 9, "totalTokenCount": 21}

    def chunk(text: str, finish: str | None = None) -> dict:
        candidate: dict = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
                "responseId": "resp_test"}

    if method != "streamGenerateContent":
        return _json(200, chunk(answer, "STOP"))
    events: list[tuple[str | None, object]] = [
        (None, chunk("Sure. ")), (None, chunk(answer)), (None, chunk("", "STOP"))]
    return Response(200, [("content-type", "text/event-stream")], stream=_sse(events),
                    pause_s=pause_s)


# What a large download looks like: incompressible bytes (a tarball, an image), fixed so
# runs are comparable.
_RANDOM_BLOCK = random.Random(1234).randbytes(256 << 10)


def download(request: Request) -> Response:
    query = parse_qs(urlsplit(request.path).query)
    total = int(query.get("bytes", ["1048576"])[0])
    chunk = int(query.get("chunk", ["16384"])[0])
    pause_s = int(query.get("pause_ms", ["0"])[0]) / 1000
    block = _RANDOM_BLOCK[:chunk] if chunk <= len(_RANDOM_BLOCK) else (
        _RANDOM_BLOCK * (chunk // len(_RANDOM_BLOCK) + 1))[:chunk]

    def chunks():
        sent = 0
        while sent < total:
            part = block[: min(chunk, total - sent)]
            sent += len(part)
            yield part

    request.answer = f"{total} bytes"
    return Response(200, [("content-type", "application/octet-stream"),
                          ("content-length", str(total))], stream=chunks(), pause_s=pause_s)


def route(request: Request, pause_s: float = 0.0) -> Response:
    """The handler of the TLS server (all provider hosts share it, as their paths differ)."""
    path = urlsplit(request.path).path
    if path.endswith("/v1/responses"):  # OpenAI Responses API: SSE or a WebSocket
        return responses_api.responses(request)
    if request.method == "POST" and path.endswith("/chat/completions"):
        return openai_chat(request, pause_s)
    if request.method == "POST" and path.endswith("/messages"):
        return anthropic_messages(request, pause_s)
    if request.method == "POST" and "/models/" in path and ":" in path.rsplit("/", 1)[-1]:
        return gemini(request, pause_s)
    if path.startswith("/api/chat") or path.startswith("/api/generate"):
        return ollama(request, pause_s)
    if path.startswith("/download"):
        return download(request)
    request.answer = f"received {len(request.body)} bytes"
    return _json(200, {"ok": True, "received": len(request.body), "sha1":
                       hashlib.sha1(request.body).hexdigest()})
