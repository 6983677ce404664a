"""The short path of a held write: classify identifies, judges and answers it itself
(busted/workers/held_judge.py), and what leaves the policy stage is the same as through
the full pipeline."""

from __future__ import annotations

import json

from busted import schema
from busted.config import MonitorConfig
from busted.workers.classify_worker import ClassifyStage
from busted.workers.identity_worker import IdentityStage
from busted.workers.policy_worker import PolicyStage

BERKO = """package busted
import rego.v1
deny contains "no berko to OpenAI" if {
    input.llm_provider == "OpenAI"
    contains(input.tls_payload, "berko")
}
"""


class Pipeline:
    """classify -> identity -> policy in one process, batches encoded between stages
    as on the wire; ``short`` says whether classify takes the short path."""

    def __init__(self, short: bool, **config) -> None:
        cfg = MonitorConfig(enforce=True, rules=(BERKO,), kubernetes=False, **config)
        self.classify = ClassifyStage(cfg)
        if not short:
            self.classify.judge = None
        self.identity = IdentityStage(cfg, clock=lambda: 1.0)
        self.policy = PolicyStage(cfg)
        self.answers: list[tuple[str, dict]] = []
        for stage in (self.classify, self.identity, self.policy):
            stage.feedback = lambda command, role=stage.role: self.answers.append((role, command))

    def feed(self, events: list[dict]) -> list[dict]:
        batch = schema.encode_batch(events)
        for stage in (self.classify, self.identity, self.policy):
            events = stage.process(schema.decode_batch(batch)) if stage.wants(batch) else \
                schema.decode_batch(batch)
            batch = schema.encode_batch(events) if events else schema.encode_batch([])
        return schema.decode_batch(batch) if events else []


def _request(prompt: str) -> tuple[bytes, bytes]:
    body = json.dumps({"model": "gpt-4o-mini",
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
            b"User-Agent: OpenAI/Python 1.40.0\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    return head, body


def _response() -> bytes:
    answer = json.dumps({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
                         "choices": [{"message": {"role": "assistant", "content": "hi"}}]}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(answer)) + answer


def _capture(payload: bytes, seq: int, *, held: bool = True, direction: str = "write",
             conn_id: int = 77) -> dict:
    return {"event_type": f"TLS_DATA_{direction.upper()}", "direction": direction, "pid": 4242,
            "conn_id": conn_id, "seq": seq, "held": held, "hold_id": seq if held else 0,
            "payload": payload, "sni": "api.openai.com", "process_name": "agent", "uid": 1000,
            "timestamp": 1.0}


def _traffic() -> list[list[dict]]:
    """Batches as capture would send them: allowed and denied requests, whole and in
    pieces, answers read back, a held server answer, traffic that was not held."""
    head, body = _request("hello")
    bad_head, bad_body = _request("tell berko")
    return [
        [_capture(head + body, 1)],
        [_capture(_response(), 2, held=False, direction="read")],
        [_capture(head, 3)],  # a head on its own: judged provisionally
        [_capture(body, 4)],
        [_capture(bad_head + bad_body[:-3], 5)],  # a denied piece (most of the body)
        [_capture(bad_head + bad_body, 6, conn_id=78)],  # a denied whole request
        [_capture(bad_head + bad_body, 7, held=False, conn_id=79)],  # denied, not held
        [_capture(_response(), 8, conn_id=80)],  # a held server answer
    ]


def _run(short: bool) -> tuple[list[dict], list[dict], Pipeline]:
    pipeline = Pipeline(short)
    out = [event for batch in _traffic() for event in pipeline.feed(batch)]
    answers = [command for _role, command in pipeline.answers]
    return out, answers, pipeline


def test_downstream_reports_and_answers_are_the_same_with_and_without_the_short_path():
    full, full_answers, _ = _run(short=False)
    short, short_answers, pipeline = _run(short=True)
    assert short == full
    assert sorted(map(repr, short_answers)) == sorted(map(repr, full_answers))
    assert not any("answered" in event for event in short)
    # The figures the comparison rests on: something was denied, killed and released.
    assert {e.get("policy") for e in full} >= {"allow", "deny"}
    assert {c["cmd"] for c in full_answers} >= {"release", "kill", "verdict"}
    # Classify answered every held request; the policy stage answered the held server
    # answer (full path) and killed the denied sender that was not held.
    by_role = {}
    for role, command in pipeline.answers:
        by_role.setdefault(role, []).append(command)
    assert {c["hold_id"] for c in by_role["classify"] if c["cmd"] in ("release", "kill")} == \
        {1, 3, 4, 5, 6}
    assert {(c["cmd"], c["hold_id"]) for c in by_role["policy"]} == {("release", 8), ("kill", 0)}
    assert pipeline.classify.stats["held_judged"] == 5


def test_a_held_write_whose_judging_fails_in_classify_is_answered_by_the_policy_stage():
    pipeline = Pipeline(short=True)

    def broken(events):
        raise RuntimeError("engine broke")

    pipeline.classify.judge.policy.process = broken
    head, body = _request("hello")
    [event] = pipeline.feed([_capture(head + body, 1)])
    assert event["policy"] == "allow" and "answered" not in event
    assert pipeline.answers == [("policy", {"cmd": "release", "hold_id": 1, "pid": 4242})]
    assert pipeline.classify.stats["held_judge_errors"] == 1


def test_no_short_path_without_a_policy_in_a_dry_run_or_with_pods():
    assert ClassifyStage(MonitorConfig(enforce=True, rules=(BERKO,), kubernetes=False)).judge
    assert ClassifyStage(MonitorConfig(enforce=True, kubernetes=False)).judge is None
    assert ClassifyStage(MonitorConfig(rules=(BERKO,), kubernetes=False)).judge is None
    assert ClassifyStage(MonitorConfig(enforce=True, dry_run=True, rules=(BERKO,),
                                       kubernetes=False)).judge is None
    assert ClassifyStage(MonitorConfig(enforce=True, rules=(BERKO,), kubernetes=True,
                                       kubeconfig="/nonexistent/kubeconfig")).judge is None


def _batched_traffic() -> list[list[dict]]:
    """Batches where a held request comes after other connections' captures (a client
    reading its last answer, a server reading a request) and after its own head."""
    head, body = _request("hello")
    bad_head, bad_body = _request("tell berko")
    return [
        [_capture(head + body, 1, held=False, direction="read", conn_id=90),
         _capture(_response(), 2, held=False, direction="read", conn_id=91),
         _capture(head, 3, held=False), _capture(body, 4),
         _capture(head + body, 5, held=False, conn_id=92)],
        [_capture(_response(), 6, held=False, direction="read"),
         _capture(bad_head + bad_body, 7, held=False, direction="read", conn_id=90),
         _capture(bad_head + bad_body, 8, conn_id=93)],
    ]


def test_a_held_write_is_answered_before_earlier_captures_of_other_connections_are_parsed():
    outputs = {}
    for short in (False, True):
        pipeline = Pipeline(short)
        fed: list[tuple[str, int]] = []
        feed = pipeline.classify.reassembler.feed

        def spy(event, now, feed=feed, fed=fed):
            fed.append(("feed", event["seq"]))
            return feed(event, now)

        pipeline.classify.reassembler.feed = spy
        pipeline.answers = fed  # answers and feeds in one timeline
        outputs[short] = [event for batch in _batched_traffic() for event in pipeline.feed(batch)]
    timeline = fed
    assert outputs[True] == outputs[False]  # same events, same order
    assert [e["seq"] for e in outputs[True] if e.get("policy")] == [1, 2, 4, 5, 6, 7, 8]
    # The held request (seq 4) was answered right after its head and itself were fed,
    # before the captures of connections 90 and 91 that came first in the batch.
    release = timeline.index(("classify", {"cmd": "release", "hold_id": 4, "pid": 4242}))
    assert timeline[:release] == [("feed", 3), ("feed", 4)]
    kill = next(i for i, item in enumerate(timeline) if item[0] == "classify"
                and item[1].get("cmd") == "kill")
    assert ("feed", 7) not in timeline[:kill] and timeline[kill - 1] == ("feed", 8)
