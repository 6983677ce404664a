"""The dashboard's event store: bounded memory, filtered view, aggregates, formatting."""

from __future__ import annotations

from busted.sources.synthetic import TrafficGenerator
from busted_gui.model import (
    EventStore,
    Filter,
    RateHistory,
    human_bytes,
    human_count,
    row_cells,
    visibility,
)


def ev(**fields):
    base = {"timestamp": 1000.0, "process_name": "python3", "pid": 42}
    base.update(fields)
    return base


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_keeps_only_the_last_n_events_and_finds_them_by_uid():
    store = EventStore(max_events=100)
    uids = [store.add(ev(seq=i)) for i in range(1, 1001)]
    assert len(store) == 100
    assert store.get(uids[0]) is None
    assert store.get(uids[-1])["seq"] == 1000
    assert store.get(uids[-100])["seq"] == 901
    assert store.get(uids[-101]) is None
    assert store.view_len() == 100
    assert [e["seq"] for _, e in store.view_slice(0, 3)] == [901, 902, 903]
    # The internal ring never holds more than twice the bound.
    assert len(store._events) < 200
    assert store.total == 1000  # totals cover everything seen


def test_filter_narrows_the_view_and_new_events_follow_it():
    store = EventStore(max_events=1000)
    store.add(ev(llm_provider="OpenAI", policy="allow", content_class="LLM_REQUEST"))
    store.add(ev(llm_provider="Anthropic", policy="deny", pii_detected=True, pii_types=["ssn"]))
    store.add(ev(provider="OpenAI", policy="audit", process_name="curl"))
    store.set_filter(Filter(provider="OpenAI"))
    assert store.view_len() == 2
    store.set_filter(Filter(provider="OpenAI", process="curl"))
    assert store.view_len() == 1
    store.set_filter(Filter(process="python3", pid=42))
    assert store.view_len() == 2
    store.set_filter(Filter(process="python3", pid=7))
    assert store.view_len() == 0
    store.set_filter(Filter(pii_only=True))
    assert [store.get(u)["llm_provider"] for u in store.view()] == ["Anthropic"]
    store.add(ev(llm_provider="Google", pii_detected=True))
    store.add(ev(llm_provider="Google"))
    assert store.view_len() == 2
    store.set_filter(Filter())
    assert store.view_len() == 5


def test_text_search_matches_every_word_case_insensitively():
    store = EventStore()
    store.add(ev(llm_provider="OpenAI", llm_user_message="Summarise the Q3 board pack"))
    store.add(ev(llm_provider="OpenAI", llm_user_message="hello"))
    store.add(ev(llm_provider="Mistral", llm_system_prompt="board member assistant"))
    store.set_filter(Filter(text="openai BOARD"))
    assert store.view_len() == 1
    store.set_filter(Filter(text="board"))
    assert store.view_len() == 2
    store.add(ev(mcp_tool="run_shell", llm_user_message="board"))
    assert store.view_len() == 3
    store.set_filter(Filter(text="42"))  # the pid is searchable too
    assert store.view_len() == 4


def test_eviction_keeps_the_filtered_view_consistent():
    store = EventStore(max_events=10)
    store.set_filter(Filter(decision="deny"))
    for i in range(100):
        store.add(ev(seq=i, policy="deny" if i % 3 == 0 else "allow"))
    view = store.view()
    assert all(store.get(u) is not None for u in view)
    assert [store.get(u)["seq"] for u in view] == [i for i in range(90, 100) if i % 3 == 0]


def test_aggregates_per_provider_and_per_process():
    store = EventStore()
    store.add(ev(llm_provider="OpenAI", llm_model="gpt-4o", content_class="LLM_REQUEST",
                 llm_input_tokens=10, bytes=100, policy="allow"))
    store.add(ev(llm_provider="OpenAI", llm_model="gpt-4o", content_class="LLM_RESPONSE",
                 llm_output_tokens=20, bytes=300, policy="allow"))
    store.add(ev(llm_provider="OpenAI", llm_model="o3-mini", content_class="LLM_REQUEST",
                 pid=7, process_name="node", policy="deny", pii_detected=True,
                 identity_instance="node-7-openai"))
    p = store.providers["OpenAI"]
    assert (p.events, p.requests, p.responses) == (3, 2, 1)
    assert (p.input_tokens, p.output_tokens, p.bytes, p.pii) == (10, 20, 400, 1)
    assert p.models == {"gpt-4o": 2, "o3-mini": 1}
    assert p.decisions == {"allow": 2, "deny": 1}
    assert p.processes == {"python3", "node"}
    procs = {g.key: g for g in store.group_rows("process")}
    assert procs["python3 (42)"].events == 2
    assert procs["node (7)"].decisions == {"deny": 1}
    idents = {g.key for g in store.group_rows("identity")}
    assert idents == {"python3 (42)", "node-7-openai"}
    assert store.decisions == {"allow": 2, "deny": 1}
    assert store.pii_total == 1
    assert store.choices()["decision"] == ["allow", "deny"]


def test_visibility_says_how_each_process_is_seen_or_why_it_is_blind():
    store = EventStore()
    store.add(ev(event_type="TCP_CONNECT", pid=1, process_name="ssh"))
    store.add(ev(event_type="TLS_DATA_WRITE", content_class="LLM_REQUEST", pid=2))
    store.add(ev(event_type="DATA_WRITE", content_class="LLM_REQUEST", pid=3))
    store.add(ev(event_type="TLS_DATA_READ", pid=4, process_name="claude",
                 tls_library="BoringSSL"))
    store.add(ev(event_type="TLS_DATA_WRITE", pid=4, process_name="claude"))
    store.add(ev(event_type="BLIND_SPOT", pid=5, process_name="gnutls-cli",
                 exe="/usr/bin/gnutls-cli", sni="api.openai.com", tls_library="GnuTLS",
                 blind_reason="GnuTLS is not hooked", blind_advice="use OpenSSL"))
    procs = {g.key: visibility(g) for g in store.group_rows("process")}
    assert procs["ssh (1)"][0] == "—"
    assert procs["python3 (2)"][0] == "seen"
    assert procs["python3 (3)"][0] == "seen · plain text"
    assert procs["claude (4)"][0] == "seen · BoringSSL"
    label, tip = procs["gnutls-cli (5)"]
    assert label == "⚠ blind: GnuTLS"
    assert tip.splitlines() == ["/usr/bin/gnutls-cli -> api.openai.com",
                                "GnuTLS is not hooked", "What to do: use OpenSSL"]
    # The agents view groups the same events the same way.
    idents = {g.key: visibility(g)[0] for g in store.group_rows("identity")}
    assert idents["gnutls-cli (5)"] == "⚠ blind: GnuTLS"


def test_active_processes_counts_only_recent_ones():
    clock = FakeClock(2000.0)
    store = EventStore(clock=clock)
    store.add(ev(timestamp=1990.0, pid=1))
    store.add(ev(timestamp=1000.0, pid=2))
    assert store.active_processes() == 1


def test_rate_history_zero_fills_and_clamps():
    rate = RateHistory(seconds=10)
    rate.add(5, 100.2, now=100.5)
    rate.add(3, 99.0, now=100.5)
    rate.add(7, 200.0, now=100.5)  # a producer clock ahead of ours lands on "now"
    rate.add(1, 50.0, now=100.5)  # older than the window: ignored
    xs, ys = rate.series(100.5)
    assert len(xs) == 10 and xs[-1] == 0.0
    assert ys[-1] == 12.0 and ys[-2] == 3.0 and sum(ys) == 15.0
    assert rate.rate(101.0, window_s=2) == 7.5


def test_add_many_feeds_the_rate_by_event_time():
    clock = FakeClock(1000.5)
    store = EventStore(clock=clock)
    store.add_many([ev(timestamp=999.1), ev(timestamp=999.7), ev(timestamp=1000.2)])
    _, ys = store.rate.series(1000.5)
    assert ys[-2:] == [2.0, 1.0]


def test_row_cells_and_formatting():
    cells = row_cells(ev(llm_provider="OpenAI", llm_model="gpt-4o", llm_stream=True,
                         llm_endpoint="/v1/chat/completions", agent_sdk="openai-python",
                         policy="deny", pii_detected=True, pii_types=["email", "phone", "ssn"],
                         identity_instance="python3-42-openai", bytes=2048))
    assert cells[1] == "python3 (42)"
    assert cells[2] == "OpenAI"
    assert cells[3].startswith("gpt-4o")
    assert cells[6] == "deny"
    assert cells[7] == "PII email,phone"
    assert cells[9] == "2.0 KiB"
    mcp = row_cells(ev(mcp_method="tools/call", mcp_tool="run_shell", content_class="MCP_REQUEST"))
    assert mcp[4] == "MCP tools/call · run_shell"
    assert row_cells({})[6] == "-"
    assert human_bytes(10) == "10 B" and human_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert human_count(999) == "999" and human_count(12_345) == "12.3k"


def test_demo_traffic_has_everything_the_dashboard_shows():
    events = TrafficGenerator(seed=1).events(3000, now=5000.0)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3000
    store = EventStore()
    store.add_many(events)
    assert {"allow", "audit", "deny"} <= set(store.decisions)
    assert len(store.providers) >= 10
    assert {"LLM_REQUEST", "LLM_RESPONSE", "MCP_REQUEST"} <= set(store.classes)
    assert store.pii_total > 0
    sdks = {e.get("agent_sdk") for e in events}
    assert {"openai-python", "openai-node", "anthropic-python", ""} <= sdks
    assert "curl" in store.process_names
    assert any(e.get("llm_stream") for e in events)
    assert any(e.get("mcp_tool") for e in events)
    # Headers carrying secrets are masked at the source.
    for e in events:
        for name, value in (e.get("http_headers") or {}).items():
            if name in ("authorization", "x-api-key", "api-key", "x-goog-api-key"):
                assert "*" in value, (name, value)


def test_the_dashboard_never_imports_bcc():
    import subprocess
    import sys

    code = (
        "import sys, busted.commands.ui, busted_gui.model, busted_gui.stream, "
        "busted_gui.detail, busted_gui.demo, busted_gui.hooks; "
        "assert 'bcc' not in sys.modules; assert 'dearpygui' not in sys.modules, 'lazy'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_iso_timestamps_from_a_json_replay_are_understood():
    from busted_gui.model import timestamp_of

    assert timestamp_of({"timestamp": "2026-11-25T21:50:43.422Z"}) == 1795643443.422
    assert timestamp_of({"timestamp": 12.5}) == 12.5
    assert timestamp_of({"timestamp": "yesterday"}) == 0.0
    assert timestamp_of({}) == 0.0
    store = EventStore()
    store.add_many([ev(timestamp="2026-11-25T21:50:43.422Z", llm_provider="OpenAI")])
    assert store.providers["OpenAI"].last_seen == 1795643443.422
