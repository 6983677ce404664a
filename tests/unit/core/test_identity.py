"""The identity stage: stable agent ids from weak signals."""

from __future__ import annotations

from busted.config import MonitorConfig
from busted.workers.identity_worker import IdentityStage


def _request(**kw):
    return {"content_class": "LLM_REQUEST", "pid": 100, "uid": 1000, "process_name": "python3",
            "agent_sdk": "anthropic-python", "llm_provider": "Anthropic",
            "llm_model": "claude-sonnet-4-20250514", "conn_id": 7, **kw}


def test_same_agent_gets_the_same_id_across_restarts_and_stages():
    first = IdentityStage(MonitorConfig()).process([_request()])[0]
    again = IdentityStage(MonitorConfig()).process([_request(pid=200, conn_id=9)])[0]
    assert first["identity_id"] == again["identity_id"]
    assert first["identity_instance"] == "python3-100-anthropic"
    assert again["identity_instance"] == "python3-200-anthropic"
    assert first["identity_confidence"] == 0.8  # no container
    assert first["identity_narrative"].startswith(
        "Anthropic claude-sonnet-4-20250514 agent via anthropic-python SDK in python3")


def test_different_sdks_are_different_agents():
    stage = IdentityStage(MonitorConfig())
    a, b = stage.process([_request(), _request(agent_sdk="openai-python", llm_provider="OpenAI")])
    assert a["identity_id"] != b["identity_id"]


def test_a_response_inherits_the_identity_of_its_request():
    stage = IdentityStage(MonitorConfig())
    request = stage.process([_request()])[0]
    response = stage.process([{"content_class": "LLM_RESPONSE", "pid": 100, "conn_id": 7,
                               "llm_provider": "Anthropic"}])[0]
    assert response["identity_id"] == request["identity_id"]
    assert response["identity_instance"] == request["identity_instance"]


def test_other_events_are_left_alone_and_batches_without_conversations_skipped():
    stage = IdentityStage(MonitorConfig())
    dns = {"event_type": "DNS_QUERY", "pid": 1}
    assert stage.process([dns]) == [{"event_type": "DNS_QUERY", "pid": 1}]
    assert not stage.wants(b"\x92\x01\x91\x81\xa3pid\x01")
    assert stage.wants(b"...LLM_REQUEST...")


def test_mcp_narrative_names_the_tools():
    stage = IdentityStage(MonitorConfig())
    ev = stage.process([{"content_class": "MCP_REQUEST", "pid": 5, "process_name": "claude",
                         "mcp_method": "tools/call", "mcp_tool": "run_shell_command"}])[0]
    assert "MCP client calling run_shell_command" in ev["identity_narrative"]
