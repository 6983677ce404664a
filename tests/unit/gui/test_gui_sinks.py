"""The dashboard's header names the --output sinks that are behind or failing."""

from __future__ import annotations

from busted_gui.header import _daemon_summary


def _stats(**sinks) -> dict:
    return {"uptime_s": 60, "workers": {"output": {"state": "running", "sinks": sinks}}}


def test_a_retrying_or_failing_sink_is_shown_with_its_backlog():
    line = _daemon_summary(_stats(a={"kind": "webhook", "state": "retrying", "spooled_events": 12345},
                                  b={"kind": "otlp", "state": "failing", "spooled_events": 3}))
    assert "webhook retrying (12.3k spooled)" in line and "otlp failing (3 spooled)" in line


def test_a_healthy_sink_is_not_shown():
    line = _daemon_summary(_stats(a={"kind": "syslog-tls", "state": "sending", "spooled_events": 40}))
    assert "syslog" not in line
