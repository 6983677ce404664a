"""The policy worker inside the real pipeline: `busted monitor --source synthetic` with
real worker processes and ipc sockets, events read from the monitor's JSON output."""

from __future__ import annotations

import shutil
from pathlib import Path

from .conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "policies"


def shipped_copy(where: Path) -> Path:
    directory = where / "policies"
    directory.mkdir()
    for path in [*SHIPPED.glob("*.rego"), SHIPPED / "data.json"]:
        shutil.copy(path, directory)
    directory.chmod(0o755)  # the policy worker runs as the `busted` account after set-up
    return directory


def test_shipped_policies_mark_pipeline_events(monitor_factory, short_dir: Path):
    policies = shipped_copy(short_dir)
    mon = monitor_factory("--source", "synthetic", "--count", "150", "--rate", "0",
                          "--exit-when-done", "--policy-dir", str(policies))
    assert mon.wait_exit(60) == 0, mon.stderr_text()
    events = mon.events()
    assert len(events) == 150
    assert all(e.get("policy") in ("allow", "audit", "deny") for e in events)
    for e in events:
        request = e.get("content_class") == "LLM_REQUEST"
        if request and e.get("pii_detected") and e.get("llm_provider") != "Ollama":
            assert e["policy"] == "deny", e
            assert any(r.startswith("pii: ") for r in e["policy_reasons"])
        if e.get("mcp_tool") == "run_shell_command":
            assert e["policy"] == "deny"
        if e.get("mcp_tool") == "search_docs":
            assert e["policy"] == "audit"
        if e.get("event_type") in ("DNS_QUERY", "TCP_CONNECT"):
            assert e["policy"] == "allow" and not e.get("policy_reasons")
    anthropic = [e for e in events if e.get("llm_provider") == "Anthropic"]
    assert anthropic and all(e["policy"] in ("audit", "deny") for e in anthropic)


def test_llm_scope_and_error_default(monitor_factory):
    failing = ('package busted\nimport rego.v1\n'
               'audit contains "n" if to_number(input.llm_model) > 0\n')
    mon = monitor_factory("--source", "synthetic", "--count", "80", "--rate", "0",
                          "--exit-when-done", "--rule", failing, "--policy-error", "deny",
                          "--policy-scope", "llm")
    assert mon.wait_exit(60) == 0, mon.stderr_text()
    events = mon.events()
    assert len(events) == 80
    for e in events:
        if str(e.get("content_class", "")).startswith(("LLM_", "MCP_")):
            assert e["policy"] == "deny" and "number" in e["policy_error"], e
        else:
            assert not e.get("policy"), e


def test_edit_reloads_live_and_broken_edit_keeps_the_policy(monitor_factory, short_dir: Path):
    policies = short_dir / "live"
    policies.mkdir()
    policies.chmod(0o755)
    rule = policies / "rule.rego"
    rule.write_text('package busted\nimport rego.v1\naudit contains "first" if true\n')
    rule.chmod(0o644)
    mon = monitor_factory("--source", "synthetic", "--rate", "100", "--policy-dir", str(policies))
    mon.wait_running()
    wait_for(lambda: any(e.get("policy") == "audit" for e in mon.events()), 20, "audited events")

    rule.write_text('package busted\nimport rego.v1\ndeny contains "second" if true\n')
    seen = len(mon.lines)
    wait_for(lambda: any(e.get("policy_reasons") == ["second"] for e in mon.events()[seen:]),
             20, "events judged by the edited policy")

    rule.write_text('package busted\nimport rego.v1\n\ndeny contains "x" if {\n  input.a ==\n}\n')
    wait_for(lambda: f"{rule}:6:1" in mon.stderr_text(), 20, "the reload error in the log")
    seen = len(mon.lines)
    wait_for(lambda: len(mon.lines) > seen + 20, 20, "more events")
    assert all(e.get("policy") == "deny" for e in mon.events()[seen:])
    assert mon.stop() == 0
