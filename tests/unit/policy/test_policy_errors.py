"""Every load error carries file:line:col; evaluation errors mark the event instead."""

from __future__ import annotations

import pytest
from policy_helpers import decide

from busted.policy import loader
from busted.policy.engine import PolicyLoadError


def test_syntax_errors_in_several_files_are_all_reported_with_positions(policy_dir):
    directory = policy_dir(
        a__rego="package busted\nimport rego.v1\n\ndeny contains \"x\" if {\n\tinput.a ==\n}\n",
        b__rego="package busted\nimport rego.v1\naudit contains \"y\" if input.b\n",
        c__rego="package busted\nimport rego.v1\n\n\nx := [1, 2\n",
    )
    with pytest.raises(PolicyLoadError) as info:
        loader.load([directory])
    problems = {p.file.rsplit("/", 1)[1]: p for p in info.value.problems}
    assert set(problems) == {"a.rego", "c.rego"}
    assert (problems["a.rego"].line, problems["a.rego"].col) == (6, 1)
    assert problems["c.rego"].line in (5, 6)
    assert all(p.reason and "\n" not in p.reason for p in problems.values())
    assert str(problems["a.rego"]).startswith(f"{directory}/a.rego:6:1: ")


def test_unknown_function_is_found_at_load_with_its_position():
    rule = 'package busted\nimport rego.v1\n\ndeny contains "x" if {\n  input.a == 1\n  nosuch(input.b)\n}\n'
    with pytest.raises(PolicyLoadError) as info:
        loader.load(rules=[rule]).compile()
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.col) == ("rule#1", 6, 3)
    assert "nosuch" in problem.reason


def test_invalid_data_json_is_reported_with_its_position(policy_dir):
    directory = policy_dir(p__rego="package busted\nimport rego.v1\n", data__json='{\n  "a": [1,\n}\n')
    with pytest.raises(PolicyLoadError) as info:
        loader.load([directory])
    (problem,) = info.value.problems
    assert problem.file.endswith("data.json") and problem.line == 3


def test_missing_directory_is_an_error():
    with pytest.raises(PolicyLoadError) as info:
        loader.load(["/nonexistent/policies"])
    assert "not a directory" in info.value.problems[0].reason


@pytest.mark.parametrize("on_error", ["allow", "deny"])
@pytest.mark.parametrize("prefer_vm", [True, False], ids=["vm", "interpreter"])
def test_evaluation_error_marks_the_event_with_the_configured_default(on_error, prefer_vm):
    rule = 'package busted\nimport rego.v1\ndecision := "audit" if to_number(input.llm_model) > 1\n'
    result = decide({"llm_model": "gpt-4o"}, rules=[rule], on_error=on_error, prefer_vm=prefer_vm)
    assert result.decision == on_error
    assert "number" in result.error
    # The same policy decides normally where it does not fail.
    assert decide({"llm_model": "7"}, rules=[rule], prefer_vm=prefer_vm).decision == "audit"


def test_conflicting_complete_rules_other_than_decision_are_an_evaluation_error():
    rule = (
        "package busted\nimport rego.v1\n"
        'level := 1 if true\nlevel := 2 if true\ndecision := "deny" if level > 0\n'
    )
    result = decide({}, rules=[rule], on_error="deny", prefer_vm=False)
    assert result.decision == "deny" and result.error


def test_decision_as_a_set_is_rejected_with_its_position():
    rule = 'package busted\nimport rego.v1\n\ndecision contains "deny" if true\n'
    with pytest.raises(PolicyLoadError) as info:
        loader.load(rules=[rule])
    problem = info.value.problems[0]
    assert (problem.line, problem.col) == (4, 1) and "complete rule" in problem.reason
