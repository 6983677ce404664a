"""HTTP/1.1 and HTTP/2 framing: chunked bodies split anywhere, gzip/deflate, pipelined
messages, truncated input, HPACK across streams, SSE and NDJSON streams."""

# ruff: noqa: E501  (protocol samples and expectation tables read best one per line)
from __future__ import annotations

import gzip
import json
import zlib

import pytest
from classifier_corpus import fixture_bytes

from busted.classifier import classify
from busted.classifier.body import decode_content
from busted.classifier.http1 import Http1Parser, HttpMessage, RawChunk, parse_one
from busted.classifier.http2 import H2Parser, looks_like_http2, parse_capture
from busted.classifier.sse import iter_ndjson, iter_sse

EVENT = b'data: {"choices": [], "a":1}\n\n'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    + b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: y\r\n\r\n"
)


def test_chunked_split_at_every_offset() -> None:
    for cut in range(1, len(CHUNKED)):
        parser = Http1Parser()
        items = parser.feed(CHUNKED[:cut]) + parser.feed(CHUNKED[cut:])
        assert len(items) == 1, cut
        msg = items[0]
        assert isinstance(msg, HttpMessage) and msg.complete and not msg.truncated
        assert msg.body == b'data: {"choices": [], "a":1}\n\nhello'
        assert not parser.in_message


def test_chunked_byte_by_byte() -> None:
    parser = Http1Parser()
    items = [item for b in CHUNKED for item in parser.feed(bytes([b]))]
    assert len(items) == 1 and items[0].body.endswith(b"hello")


def test_pipelined_requests_and_content_length() -> None:
    one = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    two = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    items = Http1Parser().feed(one + two + one[:10])
    assert [m.target for m in items] == ["/a", "/b"]
    assert items[0].body == b"abc" and items[1].body == b""


def test_body_until_close_and_flush() -> None:
    parser = Http1Parser()
    assert parser.feed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one ") == []
    parser.feed(b"part two")
    msg = parser.flush()
    assert isinstance(msg, HttpMessage) and msg.complete and msg.body == b"part one part two"


def test_truncated_input_is_still_parsed() -> None:
    msg = parse_one(b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Le")
    assert isinstance(msg, HttpMessage) and msg.truncated and msg.target == "/v1/messages"
    body_cut = parse_one(b'POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"a":')
    assert isinstance(body_cut, HttpMessage) and body_cut.truncated and body_cut.body == b'{"a":'


@pytest.mark.parametrize("size", [b"-5", b"+5", b"1_0", b"0x10", b"", b"fffffffffffffffffffff"])
def test_bad_chunk_sizes_end_the_message(size: bytes) -> None:
    # A negative size once sent the chunk loop backwards forever (found by the fuzzer).
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabcdef\r\n0\r\n\r\n"
    msg = parse_one(data)
    assert isinstance(msg, HttpMessage) and msg.truncated


def test_not_http_is_raw() -> None:
    assert isinstance(parse_one(b"\x16\x03\x01\x00\xa5"), RawChunk)
    assert isinstance(parse_one(b'{"jsonrpc": "2.0"}'), RawChunk)


def test_body_cap_marks_truncated() -> None:
    parser = Http1Parser(max_body=10)
    (msg,) = parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\n" + b"x" * 20)
    assert msg.body == b"x" * 10 and msg.truncated and parser.dropped == 10


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_content_encodings(encoding: str) -> None:
    raw = b'{"model": "gpt-4o"}' * 50
    if encoding == "gzip":
        data = gzip.compress(raw)
    elif encoding == "deflate":
        data = zlib.compress(raw)
    else:
        comp = zlib.compressobj(wbits=-15)
        data = comp.compress(raw) + comp.flush()
        encoding = "deflate"
    assert decode_content(data, encoding) == raw
    assert raw.startswith(decode_content(data[: len(data) // 2], encoding))  # cut stream: a prefix
    assert decode_content(b"garbage", encoding) == b"garbage"


def test_decompression_is_capped() -> None:
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    assert len(decode_content(bomb, "gzip")) == 1024 * 1024


def test_gzip_response_classified() -> None:
    body = gzip.compress(json.dumps({"type": "message", "role": "assistant", "model": "claude-x",
                                     "content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 3, "output_tokens": 1}}).encode())  # fmt: skip
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
        % len(body)
    )
    got = classify(data + body, "read", sni="api.anthropic.com")
    assert got["content_class"] == "LLM_RESPONSE" and got["llm_output_tokens"] == 1
    assert '"model": "claude-x"' in got["tls_payload"]  # the text is the decompressed body


# --- HTTP/2 -----------------------------------------------------------------------------


def test_h2_detection() -> None:
    req = fixture_bytes("sdk/openai-h2.req.bin")
    resp = fixture_bytes("sdk/openai-h2.resp.bin")
    assert looks_like_http2(req, "write") and looks_like_http2(resp, "read")
    assert not looks_like_http2(b"POST / HTTP/1.1\r\n", "write")


def test_h2_request_and_response_from_real_capture() -> None:
    (req,) = parse_capture(fixture_bytes("sdk/openai-h2.req.bin"), "write")
    assert req.kind == "request" and req.method == "POST" and req.target == "/v1/chat/completions"
    assert req.header(":authority") and req.complete
    assert json.loads(req.body)["model"] == "gpt-4o"
    (resp,) = parse_capture(fixture_bytes("sdk/openai-h2.resp.bin"), "read")
    assert resp.kind == "response" and resp.status == 200 and resp.stream_id == req.stream_id


def test_h2_split_at_every_offset() -> None:
    data = fixture_bytes("sdk/openai-h2.req.bin")
    for cut in range(1, len(data), 7):
        parser = H2Parser()
        msgs = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert len(msgs) == 1 and msgs[0].target == "/v1/chat/completions", cut


def test_h2_hpack_dynamic_table_across_streams() -> None:
    import h2.config
    import h2.connection

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    for sid, prompt in ((1, "first"), (3, "second")):
        body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}).encode()
        conn.send_headers(sid, [(":method", "POST"), (":path", "/v1/chat/completions"), (":scheme", "https"),
                                (":authority", "api.openai.com"), ("content-type", "application/json"),
                                ("user-agent", "OpenAI/Python 1.0.0")])  # fmt: skip
        conn.send_data(sid, body, end_stream=True)
    msgs = H2Parser().feed(conn.data_to_send())
    assert [json.loads(m.body)["messages"][0]["content"] for m in msgs] == ["first", "second"]
    # the second HEADERS block refers to the dynamic table filled by the first
    assert msgs[1].header("user-agent") == "OpenAI/Python 1.0.0"
    got = classify(conn.data_to_send() or b"", "write")
    assert got["content_class"] == "UNKNOWN"


def test_h2_mid_connection_garbage_never_raises() -> None:
    parser = H2Parser()
    parser.feed(b"\x00\x00\x05\x01\x05\x00\x00\x00\x01\xbe\xbf\xc0\xc1\xc2")  # refers to an empty table
    assert parser.hpack_errors == 1
    assert parser.feed(b"\xff" * 64) == []


# --- streams ------------------------------------------------------------------------------


def test_sse_parsing_handles_cut_streams_and_done() -> None:
    text = 'event: message_start\ndata: {"a": 1}\n\ndata: [DONE]\n\ndata: {"b": 2}'
    assert list(iter_sse(text)) == [("message_start", {"a": 1}), ("", {"b": 2})]
    assert list(iter_ndjson('{"a": 1}\n{"b": 2}\n{"c"')) == [("", {"a": 1}), ("", {"b": 2})]
