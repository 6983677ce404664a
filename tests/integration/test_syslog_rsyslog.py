"""syslog+tcp:// and syslog+tls:// against Debian's rsyslogd, started here with its own
configuration (imtcp, and imtcp with the gtls driver and a throw-away CA) on loopback
ports: every event arrives, framing intact for events of tens of KB, and a restart of
rsyslog in the middle of the flow loses nothing (duplicates are allowed: at least once)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from busted.bench.receivers import Rsyslog, rsyslog_available

from .conftest import wait_for

pytestmark = pytest.mark.skipif(not rsyslog_available(),
                                reason="needs rsyslog and rsyslog-gnutls (make setup)")


@pytest.fixture
def rsyslog(short_dir: Path):
    receiver = Rsyslog(short_dir / "rsyslog")
    yield receiver
    receiver.close()


def _targets(rsyslog: Rsyslog) -> tuple[str, ...]:
    return ("--output", f"syslog+tcp://127.0.0.1:{rsyslog.tcp_port}",
            "--output", f"syslog+tls://127.0.0.1:{rsyslog.tls_port}",
            "--output-ca", str(rsyslog.tls_files["ca.pem"]))


def _ids(rsyslog: Rsyslog, which: str) -> set[str]:
    return {event.get("event_id") for _, event in rsyslog.lines(which)}


def _truth(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _sinks(summary: dict) -> dict[str, dict]:
    from busted.report import sink_rows

    return {row["kind"]: row for row in sink_rows(summary) if row["kind"].startswith("syslog")}


def test_tcp_and_tls_deliver_every_event_with_framing_intact(rsyslog, monitor_factory, short_dir):
    rng = random.Random(14)
    recording = short_dir / "big.jsonl"
    with recording.open("w") as f:
        for i in range(300):
            size = rng.choice((40, 900, 5_000, 20_000, 60_000))
            f.write(json.dumps({
                "event_type": "TLS_DATA_WRITE", "direction": "write", "pid": 4000 + i,
                "process_name": "agent", "content_class": "LLM_REQUEST", "llm_provider": "OpenAI",
                "llm_model": "gpt-4o", "sni": "api.openai.com", "dst_port": 443,
                "llm_user_message": f"{i}:" + "x]\"\\ é" * (size // 6),
            }) + "\n")
    truth = short_dir / "truth.jsonl"
    mon = monitor_factory("--source", f"replay:{recording}", "--rate", "500", *_targets(rsyslog),
                          "--output", f"file:{truth}", "--spool-dir", str(short_dir / "spool"),
                          fmt="none")
    assert mon.wait_exit(60) == 0, mon.stderr_text()
    sent = {e["event_id"]: e for e in _truth(truth)}
    assert len(sent) == 300
    for which in ("tcp", "tls"):
        wait_for(lambda w=which: _ids(rsyslog, w) >= set(sent), 30, f"every event over {which}")
        for sd, event in rsyslog.lines(which):
            original = sent[event["event_id"]]
            assert event["llm_user_message"] == original["llm_user_message"]  # whole, unframed
            assert sd.startswith("[busted@32473 ") and f'event_id="{event["event_id"]}"' in sd
            assert 'provider="OpenAI"' in sd and 'model="gpt-4o"' in sd
            assert f'pid="{original["pid"]}"' in sd
    for kind, figures in _sinks(mon.summary()).items():
        assert figures["state"] == "sending", (kind, figures)
        assert figures["sent"] == 300 and figures["spooled_events"] == 0, (kind, figures)


def test_an_rsyslog_restart_mid_run_loses_nothing_over_tcp_or_tls(rsyslog, monitor_factory,
                                                                  short_dir):
    truth = short_dir / "truth.jsonl"
    mon = monitor_factory("--source", "synthetic", "--rate", "1000", "--count", "4000",
                          "--exit-when-done", *_targets(rsyslog), "--output", f"file:{truth}",
                          "--spool-dir", str(short_dir / "spool"), fmt="none")
    wait_for(lambda: min(len(_ids(rsyslog, w)) for w in ("tcp", "tls")) >= 800, 30,
             "the first events in rsyslog")
    rsyslog.restart()
    assert mon.wait_exit(90) == 0, mon.stderr_text()
    produced = {e["event_id"] for e in _truth(truth)}
    assert len(produced) == 4000
    for which in ("tcp", "tls"):
        wait_for(lambda w=which: _ids(rsyslog, w) >= produced, 30, f"every event over {which}")
        assert _ids(rsyslog, which) == produced
    figures = _sinks(mon.summary())
    assert sum(f["retried"] for f in figures.values()) > 0  # the restart was noticed
    assert all(f["spooled_events"] == 0 for f in figures.values()), figures
