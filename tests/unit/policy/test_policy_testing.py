"""The `opa test`-like runner."""

from __future__ import annotations

from policy_helpers import SHIPPED

from busted.policy import testing

POLICY = 'package busted\nimport rego.v1\ndeny contains "pii" if input.pii_detected\n'
TESTS = '''package busted
import rego.v1

test_pii_is_denied if {
	decision == "deny" with input as {"pii_detected": true}
}

test_wrong_expectation if {
	x := 1
	decision == "audit" with input as {"pii_detected": true}
	x == 1
}

test_error if {
	to_number("abc") == 1
}
'''


def test_shipped_policy_tests_pass():
    results = testing.run([SHIPPED])
    assert len(results) >= 12
    assert [r.test.path for r in results if not r.passed] == []
    files = {r.test.file.rsplit("/", 1)[1] for r in results}
    assert {"pii_egress_test.rego", "mcp_tools_test.rego", "demo_word_test.rego"} <= files


def test_pass_fail_error_and_where_a_failure_stopped(policy_dir):
    directory = policy_dir(p__rego=POLICY, p_test__rego=TESTS)
    results = {r.test.name: r for r in testing.run([directory])}
    assert results["test_pii_is_denied"].status == "PASS"
    failed = results["test_wrong_expectation"]
    assert failed.status == "FAIL"
    assert failed.failed_at == (10, 'decision == "audit" with input as {"pii_detected": true}')
    assert results["test_error"].status == "ERROR" and "number" in results["test_error"].detail
    lines = testing.report(list(results.values()), verbose=True)
    assert any(line.startswith("  failed at ") and ":10: decision" in line for line in lines)
    assert lines[-3:] == ["PASS: 1/3", "FAIL: 1/3", "ERROR: 1/3"]
    assert all("(" in line for line in lines if line.startswith("data.busted.test_"))


def test_pattern_selects_tests(policy_dir):
    directory = policy_dir(p__rego=POLICY, p_test__rego=TESTS)
    assert [r.test.name for r in testing.run([directory], pattern="pii")] == ["test_pii_is_denied"]


def test_data_json_is_loaded_for_tests(policy_dir):
    directory = policy_dir(
        p__rego='package busted\nimport rego.v1\ndeny contains m if { some m in data.block; input.m == m }\n',
        p_test__rego='package busted\nimport rego.v1\ntest_data if "x" in deny with input as {"m": "x"}\n',
        data__json='{"block": ["x"]}',
    )
    assert [r.status for r in testing.run([directory])] == ["PASS"]
