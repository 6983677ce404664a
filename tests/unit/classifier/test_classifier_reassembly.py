"""The classify stage and its reassembler: messages split over many captures become
one event each, verdicts go back once, memory stays under its caps, state is freed."""

# ruff: noqa: E501  (protocol samples and expectation tables read best one per line)
from __future__ import annotations

import json

from classifier_corpus import fixture_bytes

from busted.classifier.reassembly import Reassembler
from busted.config import MonitorConfig
from busted.workers.classify_worker import ClassifyStage


def capture(data: bytes, direction: str = "write", conn: int = 1, **extra) -> dict:
    kind = "TLS_DATA_WRITE" if direction == "write" else "TLS_DATA_READ"
    return {"event_type": kind, "direction": direction, "pid": 7, "conn_id": conn, "payload": data,
            "process_name": "python3", "timestamp": 1.0, **extra}  # fmt: skip


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def make_stage(**config) -> tuple[ClassifyStage, list[dict]]:
    stage = ClassifyStage(MonitorConfig(**config))
    sent: list[dict] = []
    stage.feedback = sent.append
    return stage, sent


def test_split_request_and_streamed_response_give_one_event_each() -> None:
    stage, sent = make_stage()
    out = []
    for piece in split(fixture_bytes("sdk/anthropic-stream.req.bin"), 100):
        out += stage.process([capture(piece, sni="api.anthropic.com")])
    assert len(out) == 1
    for piece in split(fixture_bytes("sdk/anthropic-stream.resp.bin"), 33):
        out += stage.process([capture(piece, "read")])
    request, response = out
    assert request["content_class"] == "LLM_REQUEST" and request["llm_provider"] == "Anthropic"
    assert request["bytes"] == len(fixture_bytes("sdk/anthropic-stream.req.bin"))
    assert "payload" not in request and request["process_name"] == "python3"
    assert "sk-ant" not in request["tls_payload"] or "FAKEFAKE" not in request["tls_payload"]
    assert response["content_class"] == "LLM_RESPONSE" and response["llm_output_tokens"] == 15
    assert response["llm_endpoint"] == "/v1/messages" and response["event_type"] == "TLS_DATA_READ"
    assert sent == []  # an LLM connection keeps being captured


def test_http2_connection_split_in_small_writes() -> None:
    stage, _ = make_stage()
    out = []
    for piece in split(fixture_bytes("sdk/openai-h2.req.bin"), 17):
        out += stage.process([capture(piece, sni="api.openai.com")])
    for piece in split(fixture_bytes("sdk/openai-h2.resp.bin"), 17):
        out += stage.process([capture(piece, "read")])
    assert [e["content_class"] for e in out] == ["LLM_REQUEST", "LLM_RESPONSE"]
    assert out[0]["tls_payload"].startswith("POST /v1/chat/completions HTTP/2")
    assert out[1]["llm_endpoint"] == "/v1/chat/completions"


def test_non_llm_connection_gets_one_verdict() -> None:
    stage, sent = make_stage()
    get = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
    stage.process([capture(get, conn=9, sni="www.example.com")])
    stage.process([capture(get, conn=9, sni="www.example.com")])
    assert sent == [{"cmd": "verdict", "pid": 7, "conn_id": 9, "capture": False}]
    assert stage.stats["verdicts"] == 1


def test_possible_model_server_is_not_dropped() -> None:
    stage, sent = make_stage()
    stage.process([capture(b"GET /v1/models HTTP/1.1\r\nHost: 10.0.0.5:8000\r\n\r\n", dst_port=8000)])
    stage.process([capture(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", conn=2, sni="api.openai.com")])
    assert sent == []


def test_passthrough_and_close_frees_state() -> None:
    stage, _ = make_stage()
    dns = {"event_type": "DNS_QUERY", "dns_name": "api.openai.com", "pid": 7}
    pre = {"event_type": "TLS_DATA_WRITE", "content_class": "LLM_REQUEST", "pid": 7, "payload": b"x"}
    head = b'POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 500\r\n\r\n{"model":"gpt-4o"'
    out = stage.process([dns, capture(head, conn=3), pre])
    assert out[0] is dns and out[1] is pre and "payload" not in pre and pre["tls_payload"] == "x"
    assert stage.reassembler.connections == 1 and stage.reassembler.buffered_bytes > 0
    close = {"event_type": "TCP_CLOSE", "pid": 7, "conn_id": 3}
    out = stage.process([close])
    assert out[-1] is close and out[0]["content_class"] == "LLM_REQUEST" and out[0]["truncated"] is True
    assert out[0]["llm_model"] == "gpt-4o"
    assert stage.reassembler.connections == 0 and stage.reassembler.buffered_bytes == 0


def test_idle_message_is_emitted_by_tick() -> None:
    stage, _ = make_stage()
    stage.now = lambda: 100.0  # type: ignore[method-assign]
    stage.process(
        [capture(b'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {"x":1}\n\n', "read")]
    )
    assert stage.tick(101.0) == []
    (event,) = stage.tick(100.0 + 60)
    assert event["content_class"] == "HTTP_RESPONSE" and stage.stats["idle_flushes"] == 1


def test_truncated_capture_resets_framing() -> None:
    stage, _ = make_stage()
    head = b'POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 100000\r\n\r\n{"model":"claude"'
    (event,) = stage.process([capture(head, truncated=True)])
    assert event["truncated"] is True and event["llm_provider"] == "Anthropic"
    # the rest of the cut body is skipped, not reported as UNKNOWN pieces
    assert stage.process([capture(b'"messages": [{"role": "user", "content": "more"}]')]) == []
    assert stage.stats["resync_skipped_bytes"] > 0
    # the next request on the connection is parsed cleanly
    (nxt,) = stage.process([capture(b"GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")])
    assert nxt["llm_endpoint"] == "/v1/models"


def test_per_connection_and_total_caps_evict_and_count() -> None:
    r = Reassembler(max_conn_bytes=4096, max_total_bytes=20000)
    head = b"POST /upload HTTP/1.1\r\nHost: files.example\r\nContent-Length: 1000000\r\n\r\n"
    out = r.feed(capture(head + b"a" * 3000, conn=1), now=0.0)
    out += r.feed(capture(b"b" * 3000, conn=1), now=0.0)
    assert r.stats["conn_cap_flushes"] == 1 and any(e.get("truncated") for e in out)
    for conn in range(2, 12):
        r.feed(capture(head + b"c" * 3000, conn=conn), now=float(conn))
        assert r.buffered_bytes <= 20000
    assert r.stats["evicted_connections"] >= 1 and r.stats["evicted_bytes"] > 0
    assert r.buffered_bytes == sum(c.buffered() for c in r._conns.values())


def test_many_connections_stay_bounded() -> None:
    r = Reassembler(max_conn_bytes=1 << 20, max_total_bytes=1 << 16)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 500}]}).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: %d\r\n\r\n" % (
        len(body) * 2
    )
    for conn in range(2000):
        r.feed(capture(head + body, conn=conn), now=float(conn))
    assert r.buffered_bytes <= 1 << 16
    assert r.connections < 2000


def test_raw_json_body_written_separately() -> None:
    stage, _ = make_stage()
    head = b"POST /mcp HTTP/1.1\r\nHost: localhost:3000\r\nContent-Type: application/json\r\nContent-Length: 58\r\n\r\n"
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
    assert len(body) == 58
    assert stage.process([capture(head, dst_port=3000)]) == []
    (event,) = stage.process([capture(body)])
    assert event["content_class"] == "MCP_REQUEST" and event["mcp_method"] == "tools/list"
    assert event["bytes"] == len(head) + len(body)


def test_close_returns_leftovers() -> None:
    stage, _ = make_stage()
    stage.process(
        [capture(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 9\r\n\r\n{")]
    )
    (event,) = stage.close()
    assert event["content_class"] == "LLM_REQUEST"


def test_wants_only_batches_with_captures_or_closes() -> None:
    from busted import schema

    stage, _ = make_stage()
    assert stage.wants(schema.encode_batch([capture(b"GET / HTTP/1.1\r\n\r\n")]))
    assert stage.wants(schema.encode_batch([{"event_type": "TCP_CLOSE", "pid": 1, "conn_id": 2}]))
    assert not stage.wants(
        schema.encode_batch([{"event_type": "DNS_QUERY", "tls_payload": "x", "content_class": "UNKNOWN"}])
    )
