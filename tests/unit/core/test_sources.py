"""The synthetic and replay sources."""

from __future__ import annotations

import pytest

from busted.config import MonitorConfig
from busted.errors import UsageError
from busted.sources import open_source
from busted.sources.replay import ReplaySource
from busted.sources.synthetic import SyntheticSource


def test_synthetic_source_paces_to_the_rate():
    now = [0.0]
    src = SyntheticSource(rate=1000, clock=lambda: now[0])
    src.start()
    now[0] = 0.5
    assert len(src.poll(0)) == 500
    assert src.poll(0) == []


def test_synthetic_source_stops_at_count_and_mixes_classes():
    src = SyntheticSource(rate=0, count=300)
    src.start()
    events = []
    while not src.exhausted:
        events += src.poll(0)
    assert len(events) == 300
    classes = {e.get("content_class") for e in events}
    assert {"LLM_REQUEST", "LLM_RESPONSE", "MCP_REQUEST"} <= classes
    assert any(e.get("event_type") == "DNS_QUERY" for e in events)


def test_replay_counts_bad_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"pid": 1}\n[1,2]\nnot json\n{"pid": 2, "seq": 99}\n')
    src = ReplaySource(str(path))
    src.start()
    events = src.poll(0)
    assert [e["pid"] for e in events] == [1, 2]
    assert "seq" not in events[1]  # capture renumbers
    assert src.exhausted and src.stats() == {"bad_lines": 2}


def test_unknown_source_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown source"):
        open_source(MonitorConfig(source="tcpdump"))
    with pytest.raises(UsageError):
        ReplaySource("/nonexistent/file").start()
