"""WebSocket frames back to messages (masks, 7/16/64-bit lengths, fragments, control
frames in between, permessage-deflate with and without context takeover), and a Codex
style Responses API session through the reassembler: the handshake stays plain HTTP,
``response.create`` is the LLM request, the ``response.*`` events one LLM response."""

# ruff: noqa: E501  (protocol samples read best one per line)
from __future__ import annotations

import json
import os
import struct
import zlib

from busted.classifier import websocket
from busted.classifier.reassembly import Reassembler
from busted.classifier.websocket import FrameDecoder, Session, WsParser


def frame(payload: bytes, opcode: int = 1, fin: bool = True, mask: bool = False,
          rsv1: bool = False, key: bytes = b"\x11\x22\x33\x44") -> bytes:
    """One frame as a client (mask=True) or a server would send it."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


class Deflater:
    """A permessage-deflate sender: one raw DEFLATE stream, each message sync-flushed
    and its 00 00 ff ff tail removed (RFC 7692)."""

    def __init__(self, takeover: bool = True) -> None:
        self.takeover = takeover
        self.z = zlib.compressobj(wbits=-15)

    def __call__(self, data: bytes) -> bytes:
        if not self.takeover:
            self.z = zlib.compressobj(wbits=-15)
        out = self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]


def messages(decoder: FrameDecoder, data: bytes, step: int = 0) -> list[tuple[int, bytes, bool]]:
    pieces = [data] if not step else [data[i:i + step] for i in range(0, len(data), step)]
    out = []
    for piece in pieces:
        out += [(op, payload, cut) for op, payload, cut, _wire in decoder.feed(piece)]
    return out


def test_masked_and_unmasked_frames_of_every_length_form() -> None:
    for n in (0, 5, 125, 126, 65535, 65536, 200_000):
        payload = os.urandom(n)
        for mask in (False, True):
            got = messages(FrameDecoder(), frame(payload, opcode=2, mask=mask))
            assert got == [(2, payload, False)], (n, mask)


def test_frames_split_anywhere_and_several_in_one_capture() -> None:
    data = frame(b"first", mask=True) + frame(b"x" * 300, mask=True) + frame(b"third", mask=True)
    expected = [(1, b"first", False), (1, b"x" * 300, False), (1, b"third", False)]
    for step in (1, 2, 3, 7, 64, 1000):
        assert messages(FrameDecoder(), data, step) == expected


def test_fragments_join_and_control_frames_in_between_are_dropped() -> None:
    data = (frame(b"Hello, ", fin=False, mask=True)
            + frame(b"ping!", opcode=9, mask=True)  # a ping between two fragments
            + frame(b"World", opcode=0, fin=False, mask=True)
            + frame(b"", opcode=10, mask=True)  # a pong
            + frame(b"!", opcode=0, mask=True)
            + frame(b"\x03\xe8bye", opcode=8, mask=True))  # close
    assert messages(FrameDecoder(), data, step=3) == [(1, b"Hello, World!", False)]


def test_permessage_deflate_with_context_takeover() -> None:
    deflate = Deflater(takeover=True)
    texts = [b'{"type":"response.create","input":"same words same words"}'] * 3
    data = b"".join(frame(deflate(t), rsv1=True, mask=True) for t in texts)
    # later messages lean on the earlier ones' window: they are tiny
    assert len(data) < len(texts[0]) * 2
    assert messages(FrameDecoder(deflate=True), data, step=5) == [(1, t, False) for t in texts]


def test_permessage_deflate_without_context_takeover_and_fragmented() -> None:
    deflate = Deflater(takeover=False)
    text = json.dumps({"type": "response.create", "input": "a" * 5000}).encode()
    packed = deflate(text)
    half = len(packed) // 2
    data = (frame(packed[:half], fin=False, rsv1=True, mask=True)
            + frame(packed[half:], opcode=0, mask=True)  # RSV1 only on the first frame
            + frame(deflate(b"again"), rsv1=True, mask=True))
    got = messages(FrameDecoder(deflate=True, takeover=False), data)
    assert got == [(1, text, False), (1, b"again", False)]


def test_uncompressed_message_on_a_deflate_session() -> None:
    data = frame(b"plain", mask=True)  # RSV1 clear: this one was sent as it is
    assert messages(FrameDecoder(deflate=True), data) == [(1, b"plain", False)]


def test_oversized_message_is_cut_and_the_next_one_still_reads() -> None:
    big = b"y" * 5000
    data = frame(big, mask=True) + frame(b"next", mask=True)
    got = messages(FrameDecoder(max_message=1000), data, step=700)
    assert got == [(1, big[:1000], True), (1, b"next", False)]


def test_garbage_is_dropped_not_raised() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x7f\xff" + os.urandom(100)) == []  # RSV bits and opcode 0xF
    assert decoder.errors == 1
    assert messages(decoder, frame(b"after")) == [(1, b"after", False)]


def test_server_response_events_are_gathered_until_the_response_ends() -> None:
    parser = WsParser("response", Session(active=True))
    events = [{"type": "response.created", "response": {"model": "gpt-test"}},
              {"type": "response.output_text.delta", "delta": "Hi"},
              {"type": "response.completed", "response": {"usage": {"input_tokens": 3}}}]
    wire = b"".join(frame(json.dumps(e).encode()) for e in events)
    out = parser.feed(wire[:10]) + parser.feed(wire[10:])
    assert len(out) == 1 and out[0].events == 3 and not out[0].truncated
    assert out[0].wire_bytes == len(wire)
    assert not parser.in_message
    # a response still open when input ends comes out cut short
    parser.feed(frame(json.dumps(events[0]).encode()))
    assert parser.in_message
    [cut] = parser.flush()
    assert cut.truncated and cut.events == 1


# --- a Codex-style session through the reassembler ----------------------------------------

UPGRADE = (b"GET /v1/responses HTTP/1.1\r\nHost: api.openai.com\r\nConnection: Upgrade\r\n"
           b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
           b"Authorization: Bearer sk-proj-FAKEFAKEFAKEFAKEFAKEFAKE\r\n\r\n")
SWITCHED = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")


def create_message(prompt: str) -> bytes:
    return json.dumps({
        "type": "response.create", "model": "gpt-5-codex", "instructions": "You are Codex.",
        "input": [{"type": "message", "role": "developer", "content": [
                      {"type": "input_text", "text": "<permissions>...</permissions>"}]},
                  {"type": "message", "role": "user", "content": [
                      {"type": "input_text", "text": prompt}]}],
        "stream": True, "tools": []}).encode()


def answer_events(text: str) -> list[bytes]:
    events = [
        {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5-codex", "status": "in_progress"}},
        {"type": "response.output_item.added", "item": {"type": "message", "role": "assistant", "content": []}},
        {"type": "response.output_text.delta", "delta": text[:5]},
        {"type": "response.output_text.delta", "delta": text[5:]},
        {"type": "response.output_item.done", "item": {"type": "message", "content": [{"type": "output_text", "text": text}]}},
        {"type": "response.completed", "response": {"id": "resp_1", "model": "gpt-5-codex", "status": "completed",
                                                    "usage": {"input_tokens": 120, "output_tokens": 7, "total_tokens": 127}}},
    ]
    return [json.dumps(e).encode() for e in events]


def capture(data: bytes, direction: str) -> dict:
    kind = "TLS_DATA_WRITE" if direction == "write" else "TLS_DATA_READ"
    return {"event_type": kind, "direction": direction, "pid": 9, "conn_id": 77, "payload": data,
            "process_name": "codex", "timestamp": 1.0}


def test_codex_session_over_a_deflate_websocket() -> None:
    r = Reassembler()
    out = r.feed(capture(UPGRADE, "write"), 0.0)
    # the 101 and the first server frame may arrive in one read
    client, server = Deflater(), Deflater()
    first, *rest = answer_events("Hello from the fake API")
    out += r.feed(capture(SWITCHED + frame(server(first), rsv1=True), "read"), 0.1)
    request = frame(client(create_message("please say berko")), rsv1=True, mask=True)
    for i in range(0, len(request), 50):  # sealed in several TLS records
        out += r.feed(capture(request[i:i + 50], "write"), 0.2)
    for event in rest:
        out += r.feed(capture(frame(server(event), rsv1=True), "read"), 0.3)
    assert [e["content_class"] for e in out] == ["HTTP_REQUEST", "HTTP_RESPONSE", "LLM_REQUEST", "LLM_RESPONSE"]
    handshake, switched, ask, answer = out
    assert "FAKEFAKEFAKE" not in handshake["tls_payload"]  # the API key stays masked
    assert "llm_user_message" not in handshake
    assert ask["llm_provider"] == "OpenAI" and ask["llm_model"] == "gpt-5-codex"
    assert ask["llm_user_message"] == "please say berko"
    assert ask["llm_endpoint"] == "/v1/responses"
    assert ask["tls_payload"].startswith('{"type": "response.create"')
    assert ask["bytes"] == len(request) and "http_headers" not in ask
    assert answer["llm_provider"] == "OpenAI" and answer["event_type"] == "TLS_DATA_READ"
    assert answer["llm_response_preview"] == "Hello from the fake API"
    assert answer["llm_input_tokens"] == 120 and answer["llm_output_tokens"] == 7
    assert answer["llm_model"] == "gpt-5-codex"


def test_second_turn_on_the_same_websocket_and_mcp_messages() -> None:
    r = Reassembler()
    r.feed(capture(UPGRADE.replace(b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", b""), "write"), 0.0)
    r.feed(capture(SWITCHED.replace(b"Sec-WebSocket-Extensions: permessage-deflate\r\n", b""), "read"), 0.0)
    out = []
    for prompt in ("first turn", "second turn"):
        out += r.feed(capture(frame(create_message(prompt), mask=True), "write"), 1.0)
        out += r.feed(capture(b"".join(frame(e) for e in answer_events("ok " + prompt)), "read"), 1.0)
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_file", "arguments": {}}}
    out += r.feed(capture(frame(json.dumps(rpc).encode(), mask=True), "write"), 2.0)
    out += r.feed(capture(frame(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}).encode()), "read"), 2.0)
    assert [e["content_class"] for e in out] == ["LLM_REQUEST", "LLM_RESPONSE"] * 2 + ["MCP_REQUEST", "MCP_RESPONSE"]
    assert [e.get("llm_user_message") for e in out[:4:2]] == ["first turn", "second turn"]
    assert out[3]["llm_response_preview"] == "ok second turn"
    assert out[4]["mcp_tool"] == "read_file"


def test_open_response_is_emitted_when_idle_and_at_close() -> None:
    r = Reassembler(idle_timeout_s=5.0)
    r.feed(capture(UPGRADE, "write"), 0.0)
    r.feed(capture(SWITCHED.replace(b"Sec-WebSocket-Extensions: permessage-deflate\r\n", b""), "read"), 0.0)
    first = answer_events("never finished")[:3]
    assert r.feed(capture(b"".join(frame(e) for e in first), "read"), 1.0) == []
    [cut] = r.expire(10.0)
    assert cut["content_class"] == "LLM_RESPONSE" and cut["truncated"]
    assert cut["llm_response_preview"] == "never"
    assert r.close(9, 77) == []


def test_not_a_websocket_without_the_101() -> None:
    r = Reassembler()
    r.feed(capture(UPGRADE, "write"), 0.0)
    refused = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    r.feed(capture(refused, "read"), 0.0)
    assert not websocket.is_active(r._conns[(9, 77)].ctx)
    # the client falls back to a POST on the same connection: still plain HTTP
    body = create_message("over https")
    post = (b"POST /v1/responses HTTP/1.1\r\nHost: api.openai.com\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body
    [event] = r.feed(capture(post, "write"), 1.0)
    assert event["content_class"] == "LLM_REQUEST" and event["llm_user_message"] == "over https"
