"""The policy worker's stage: fields it sets, scope, errors, passthrough, reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_helpers import SHIPPED

from busted import schema
from busted.config import MonitorConfig
from busted.errors import PolicyError
from busted.policy.reload import POLL_INTERVAL_S
from busted.policy.samples import SHIPPED_CASES, shipped_events
from busted.workers.policy_worker import STAGE, PolicyStage


def stage(**config) -> PolicyStage:
    return PolicyStage(MonitorConfig(**config))


def test_stage_is_registered_and_passthrough_without_policies():
    assert STAGE is PolicyStage
    assert stage().passthrough
    assert not stage(rules=('package busted\nimport rego.v1\nx := 1\n',)).passthrough


def test_shipped_policies_mark_every_event():
    s = stage(policy_dirs=(SHIPPED,))
    events = s.process(shipped_events())
    for (name, _, expected), event in zip(SHIPPED_CASES, events, strict=True):
        assert event["policy"] == expected, name
        assert ("policy_reasons" in event) == (expected != "allow"), name
        assert "policy_error" not in event
    assert s.stats["evaluations"] == len(events)
    assert s.stats["deny"] == sum(1 for *_, d in SHIPPED_CASES if d == "deny")


def test_events_survive_the_wire_with_their_decision():
    s = stage(policy_dirs=(SHIPPED,))
    frame = schema.encode_batch(s.process(shipped_events()))
    decoded = schema.decode_batch(frame)
    assert [e["policy"] for e in decoded] == [d for *_, d in SHIPPED_CASES]


def test_llm_scope_evaluates_only_llm_and_mcp_events():
    s = stage(policy_dirs=(SHIPPED,), policy_scope="llm")
    events = s.process(shipped_events())
    for event in events:
        judged = event.get("content_class", "").startswith(("LLM_", "MCP_"))
        assert ("policy" in event) == judged, event.get("event_type")
    plain = [{"event_type": "TCP_CONNECT", "dst_ip": "1.1.1.1"}]
    assert not s.wants(schema.encode_batch(plain))
    assert s.wants(schema.encode_batch(shipped_events()[:1]))
    assert stage(policy_dirs=(SHIPPED,)).wants(schema.encode_batch(plain))


@pytest.mark.parametrize("default", ["allow", "deny"])
def test_evaluation_error_sets_policy_error_and_the_default(default):
    rule = 'package busted\nimport rego.v1\naudit contains "n" if to_number(input.llm_model) > 0\n'
    s = stage(rules=(rule,), policy_error=default)
    (event,) = s.process([{"llm_model": "not a number"}])
    assert event["policy"] == default
    assert "number" in event["policy_error"]
    assert s.stats["policy_errors"] == 1


def test_bad_policy_at_start_up_is_a_policy_error_with_position(tmp_path: Path):
    (tmp_path / "p.rego").write_text('package busted\nimport rego.v1\n\nx := [1,\n')
    with pytest.raises(PolicyError) as info:
        stage(policy_dirs=(tmp_path,))
    assert f"{tmp_path / 'p.rego'}:" in str(info.value)


def test_tick_reloads_edited_policies(tmp_path: Path):
    rule = tmp_path / "p.rego"
    rule.write_text('package busted\nimport rego.v1\naudit contains "a" if true\n')
    s = stage(policy_dirs=(tmp_path,))
    assert s.process([{}])[0]["policy"] == "audit"
    rule.write_text('package busted\nimport rego.v1\ndeny contains "d" if true\n')
    now = 1000.0
    for _ in range(3):
        now += POLL_INTERVAL_S
        s.tick(now)
    assert s.stats["reloads"] == 1
    assert s.process([{}])[0]["policy"] == "deny"
