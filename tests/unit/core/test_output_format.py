"""How the output worker prints events."""

from __future__ import annotations

import json

from busted.workers.output_worker import iso_time, to_json_line, to_text

REQUEST = {
    "event_type": "TLS_DATA_WRITE", "direction": "write", "timestamp": 1764106321.125,
    "pid": 1234, "process_name": "python3", "content_class": "LLM_REQUEST",
    "llm_provider": "Anthropic", "llm_model": "claude-sonnet-4-20250514",
    "llm_endpoint": "/v1/messages", "agent_sdk": "anthropic-python", "llm_stream": True,
    "llm_user_message": "Write me a haiku about eBPF", "payload": b"\x00raw",
}


def test_text_line_reads_like_the_seed_example():
    text = to_text(dict(REQUEST))
    first, second = text.splitlines()
    assert first.endswith("python3 (1234) >>> Anthropic claude-sonnet-4-20250514 messages "
                          "[sdk:anthropic-python | stream]")
    assert second == "  user: Write me a haiku about eBPF"


def test_text_hides_plain_connections_unless_verbose():
    connect = {"event_type": "TCP_CONNECT", "pid": 1, "process_name": "curl",
               "dst_ip": "1.2.3.4", "dst_port": 443, "timestamp": 0}
    assert to_text(connect) is None
    assert "tcp_connect 1.2.3.4:443" in to_text(connect, verbose=True)
    assert "policy:deny" in to_text({**connect, "policy": "deny"})


def test_json_line_never_prints_raw_payload_and_uses_iso_time():
    line = to_json_line(dict(REQUEST))
    assert line.endswith(b"\n")
    obj = json.loads(line)
    assert "payload" not in obj
    assert obj["timestamp"] == "2025-11-25T21:32:01.125Z"


def test_iso_time_changes_with_the_second():
    assert iso_time(0.5) == "1970-01-01T00:00:00.500Z"
    assert iso_time(61.0) == "1970-01-01T00:01:01.000Z"


def test_gaps_are_counted_and_late_events_uncounted():
    from busted.config import MonitorConfig
    from busted.workers.output_worker import OutputStage

    stage = OutputStage(MonitorConfig(format="none"))
    stage.setup()
    stage.process([{"seq": 0}, {"seq": 1}, {"seq": 4}])
    assert stage.stats["missing"] == 2
    stage.process([{"seq": 2}])  # a message classify emitted late
    assert stage.stats["missing"] == 1
    stage.process([{"seq": 5}, {"seq": 7}])
    assert stage.stats["missing"] == 2
