"""`busted policy check|eval|test` as a user runs them: the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from monitor_process import BUSTED

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*BUSTED, *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=60)


@pytest.fixture
def broken_dir(tmp_path: Path) -> Path:
    (tmp_path / "ok.rego").write_text('package busted\nimport rego.v1\naudit contains "a" if true\n')
    (tmp_path / "bad.rego").write_text(
        'package busted\nimport rego.v1\n\ndeny contains "x" if {\n  input.a ==\n}\n'
    )
    (tmp_path / "worse.rego").write_text('package busted\n\ndecision = "deny" {\n  input.a = = 1\n}\n')
    return tmp_path


def test_seed_example_works_as_written():
    # From the seed README, verbatim, through a shell pipe.
    result = subprocess.run(
        """echo '{"llm_provider":"Anthropic","pii_detected":true}' | """
        f"""{sys.executable} -m busted policy eval --dir ./policies/""",
        shell=True, capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["decision"] == "deny"
    assert any(r.startswith("pii:") for r in output["reasons"])
    assert any(r.startswith("audit:") for r in output["reasons"])
    assert output["rules"]["decision"] == "deny"


def test_eval_with_input_file_and_inline_v0_rule(tmp_path: Path):
    event = tmp_path / "event.json"
    event.write_text('{"llm_provider": "Anthropic", "tls_payload": "tell berko"}')
    rule = """package busted
  default decision = "allow"
  decision = "deny" {
      input.llm_provider == "Anthropic"
      contains(input.tls_payload, "berko")
  }"""
    result = run("policy", "eval", "--rule", rule, "--input", str(event))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["decision"] == "deny"
    quiet = run("policy", "eval", "--rule", rule, "--input", "-", stdin='{"llm_provider": "OpenAI"}')
    assert json.loads(quiet.stdout)["decision"] == "allow"


def test_eval_rejects_bad_input_with_a_clear_message():
    result = run("policy", "eval", "--dir", "policies", "--input", "-", stdin="{not json")
    assert result.returncode == 2
    assert "not JSON" in result.stderr and "Traceback" not in result.stderr


def test_check_passes_on_shipped_policies():
    result = run("policy", "check", "--dir", "./policies/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_check_lists_every_error_with_file_line_column(broken_dir: Path):
    result = run("policy", "check", "--dir", str(broken_dir))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if ".rego:" in line]
    assert len(lines) == 2
    assert any(line.startswith(f"{broken_dir / 'bad.rego'}:6:1: ") for line in lines)
    assert any(line.startswith(f"{broken_dir / 'worse.rego'}:4:") for line in lines)
    assert "Traceback" not in result.stderr


def test_check_accepts_files(broken_dir: Path):
    assert run("policy", "check", str(broken_dir / "ok.rego")).returncode == 0
    assert run("policy", "check", str(broken_dir / "bad.rego")).returncode == 1


def test_test_runs_shipped_tests():
    result = run("policy", "test", "--dir", "./policies/", "--verbose")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout and "FAIL" not in result.stdout
    passes = [line for line in result.stdout.splitlines() if line.endswith(")") and ": PASS (" in line]
    assert len(passes) >= 12
    assert result.stdout.splitlines()[-1].startswith("PASS: ")


def test_test_fails_with_exit_1_and_shows_the_failing_expression(tmp_path: Path):
    (tmp_path / "p.rego").write_text('package busted\nimport rego.v1\naudit contains "a" if input.x\n')
    (tmp_path / "p_test.rego").write_text(
        'package busted\nimport rego.v1\n\ntest_expects_deny if {\n'
        '  decision == "deny" with input as {"x": true}\n}\n'
    )
    result = run("policy", "test", "--dir", str(tmp_path), "--verbose")
    assert result.returncode == 1
    assert "data.busted.test_expects_deny: FAIL" in result.stdout
    assert f"failed at {tmp_path / 'p_test.rego'}:5: decision == \"deny\"" in result.stdout
    assert "FAIL: 1/1" in result.stdout


def test_help_texts_end_with_examples():
    for sub in ("check", "eval", "test"):
        result = run("policy", sub, "--help")
        assert result.returncode == 0
        assert result.stdout.index("Examples:") > result.stdout.index("Options:")


def test_missing_directory_is_a_usage_error():
    result = run("policy", "check", "--dir", "/nonexistent")
    assert result.returncode == 2 and "no such directory" in result.stderr


def test_bench_policy_reports_rates_as_json():
    result = run("bench", "policy", "--seconds", "0.2", "--engine", "vm", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["modules"] >= 7 and "tls_payload" in report["input_fields"]
    for mix in ("vm/llm", "vm/all"):
        assert report["results"][mix]["per_s"] > 0
        assert report["results"][mix]["engine_used"] == "vm"
    assert isinstance(report["meets_goal"], bool)
