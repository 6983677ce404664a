"""What classify and policy answer for held writes under --enforce (no kernel needed)."""

from __future__ import annotations

import json
import time

from polling import wait_for

from busted import schema
from busted.config import MonitorConfig
from busted.workers.classify_worker import ClassifyStage
from busted.workers.policy_worker import PolicyStage

BERKO = """package busted
import rego.v1
deny contains "no berko to OpenAI" if {
    input.llm_provider == "OpenAI"
    contains(input.tls_payload, "berko")
}
block_destinations contains "203.0.113.9:443"
block_destinations contains "localhost"
"""


def _stage(cls, **config):
    stage = cls(MonitorConfig(**config))
    sent: list[dict] = []
    stage.feedback = sent.append
    return stage, sent


def _capture(payload: bytes, seq: int, held: bool = True, direction: str = "write") -> dict:
    return {"event_type": f"TLS_DATA_{direction.upper()}", "direction": direction, "pid": 4242,
            "conn_id": 77, "seq": seq, "held": held, "hold_id": seq if held else 0,
            "payload": payload, "sni": "api.openai.com", "process_name": "agent"}


def _request(prompt: str) -> tuple[bytes, bytes]:
    body = json.dumps({"model": "gpt-4o-mini",
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    return head, body


def test_classify_judges_a_held_piece_of_a_request_as_it_stands_and_carries_the_last_one():
    """The head (or part of the body) of a request, held: it goes on as a provisional
    event for the policy to answer; the capture that completes it carries its own hold."""
    stage, sent = _stage(ClassifyStage, enforce=True)
    head, body = _request("hello berko")
    [partial] = stage.process([_capture(head + body[:20], 1)])
    assert partial["provisional"] and partial["held"] and partial["hold_id"] == 1
    assert partial["content_class"] == "LLM_REQUEST" and sent == []
    [message] = stage.process([_capture(body[20:], 2)])
    assert message["content_class"] == "LLM_REQUEST" and not message.get("provisional")
    assert message["held"] is True and message["hold_id"] == 2  # not the first capture's id
    assert "hello berko" in message["tls_payload"] and sent == []


def test_classify_releases_a_held_write_with_nothing_to_judge():
    stage, sent = _stage(ClassifyStage, enforce=True)
    assert stage.process([_capture(b"POST /v1/chat/completions HTTP/1.1\r\nHost: a", 1)]) == []
    assert sent == [{"cmd": "release", "hold_id": 1, "pid": 4242}]


def test_policy_answers_a_provisional_piece_and_reports_it_only_when_denied():
    stage, sent = _stage(PolicyStage, enforce=True, rules=(BERKO,))
    piece = {"event_type": "TLS_DATA_WRITE", "direction": "write", "pid": 4242, "seq": 5,
             "held": True, "hold_id": 5, "provisional": True, "content_class": "LLM_REQUEST",
             "llm_provider": "OpenAI", "tls_payload": "POST ... hello", "conn_id": 77}
    assert stage.process([piece]) == []
    assert sent == [{"cmd": "release", "hold_id": 5, "pid": 4242}]
    sent.clear()
    [denied] = stage.process([dict(piece, tls_payload="POST ... berko")])
    assert denied["policy"] == "deny" and sent[0]["cmd"] == "kill" and sent[0]["hold_id"] == 5


def test_classify_stops_holding_a_server_connection():
    stage, sent = _stage(ClassifyStage, enforce=True)
    answer = json.dumps({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
                         "choices": [{"message": {"role": "assistant", "content": "hi"}}]}).encode()
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % len(answer)) + answer
    [message] = stage.process([_capture(response, 5)])
    assert message["held"] and message["content_class"].endswith("_RESPONSE")
    assert {"cmd": "verdict", "pid": 4242, "conn_id": 77, "hold": False} in sent


def _judged(stage, prompt: str, held: bool = True, direction: str = "write") -> dict:
    event = {"event_type": "TLS_DATA_WRITE", "direction": direction, "pid": 4242, "seq": 9,
             "held": held, "hold_id": 9 if held else 0, "content_class": "LLM_REQUEST",
             "llm_provider": "OpenAI", "llm_model": "gpt-4o-mini", "tls_payload": prompt,
             "process_name": "agent", "conn_id": 77}
    [out] = stage.process([event])
    return out


def test_policy_answers_every_held_write():
    stage, sent = _stage(PolicyStage, enforce=True, rules=(BERKO,))
    allowed = _judged(stage, "hello")
    assert allowed["policy"] == "allow" and sent == [{"cmd": "release", "hold_id": 9, "pid": 4242}]
    sent.clear()
    denied = _judged(stage, "tell berko")
    assert denied["policy"] == "deny" and denied["action"] == "kill"
    [kill] = sent
    assert kill["cmd"] == "kill" and kill["hold_id"] == 9 and kill["pid"] == 4242
    assert kill["llm_provider"] == "OpenAI" and kill["policy_reasons"] == ["no berko to OpenAI"]


def test_policy_kills_a_denied_sender_that_was_not_held_but_never_a_receiver():
    stage, sent = _stage(PolicyStage, enforce=True, rules=(BERKO,))
    _judged(stage, "berko", held=False)
    assert sent[0]["cmd"] == "kill" and sent[0]["hold_id"] == 0
    sent.clear()
    received = _judged(stage, "berko", held=False, direction="read")
    assert received["policy"] == "deny" and received["action"] == "none-received" and sent == []


def test_policy_dry_run_says_would_kill():
    stage, sent = _stage(PolicyStage, enforce=True, dry_run=True, rules=(BERKO,))
    assert _judged(stage, "berko", held=False)["action"] == "would-kill"


def test_policy_without_enforce_sends_nothing():
    stage, sent = _stage(PolicyStage, rules=(BERKO,))
    assert _judged(stage, "berko")["policy"] == "deny" and sent == []
    stage.tick(time.monotonic())
    assert sent == []


def test_policy_in_llm_scope_still_answers_held_writes_of_other_traffic():
    stage, sent = _stage(PolicyStage, enforce=True, rules=(BERKO,), policy_scope="llm")
    other = {"event_type": "TLS_DATA_WRITE", "direction": "write", "pid": 1, "seq": 3, "held": True,
             "hold_id": 3, "content_class": "HTTP_REQUEST"}
    assert stage.wants(schema.encode_batch([other]))
    assert not stage.wants(schema.encode_batch([dict(other, held=False)]))
    stage.process([other])
    assert sent == [{"cmd": "release", "hold_id": 3, "pid": 1}]


def test_policy_sends_the_block_list_resolved():
    stage, sent = _stage(PolicyStage, enforce=True, rules=(BERKO,))

    def block_sent():
        stage.tick(time.monotonic())
        return next((c for c in sent if c["cmd"] == "block"), None)

    command = wait_for(block_sent, 10, "the block list")
    by_text = {d["text"]: d for d in command["destinations"]}
    assert by_text["203.0.113.9:443"]["ip"] == "203.0.113.9" and by_text["203.0.113.9:443"]["port"] == 443
    assert "127.0.0.1" in by_text["localhost"]["addrs"]
