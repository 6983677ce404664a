"""deny > audit > allow across rules and files, whatever their order; reasons; undefined."""

from __future__ import annotations

import itertools

import pytest
from policy_helpers import SEED_EXAMPLE, decide

ALLOW = 'package busted\nimport rego.v1\ndecision := "allow" if input.llm_provider != ""\n'
AUDIT = 'package busted\nimport rego.v1\ndecision := "audit" if input.llm_provider == "Anthropic"\n'
DENY = 'package busted\nimport rego.v1\ndecision := "deny" if input.pii_detected\n'
ANTHROPIC_PII = {"llm_provider": "Anthropic", "pii_detected": True}


@pytest.mark.parametrize("prefer_vm", [True, False], ids=["vm", "interpreter"])
def test_seed_readme_example_decides_by_precedence_in_one_file(prefer_vm):
    # Both complete rules match: plain Rego raises a conflict; we want deny.
    rules = [SEED_EXAMPLE]
    assert decide(ANTHROPIC_PII, rules=rules, prefer_vm=prefer_vm).decision == "deny"
    assert decide({"llm_provider": "Anthropic"}, rules=rules, prefer_vm=prefer_vm).decision == "audit"
    assert decide({"llm_provider": "OpenAI"}, rules=rules, prefer_vm=prefer_vm).decision == "allow"
    assert decide({"llm_provider": "Ollama", "pii_detected": True}, rules=rules).decision == "allow"


@pytest.mark.parametrize("order", list(itertools.permutations(["allow", "audit", "deny"])))
def test_precedence_across_files_does_not_depend_on_their_order(policy_dir, order):
    texts = {"allow": ALLOW, "audit": AUDIT, "deny": DENY}
    # File names sort in the permutation's order, so each order is loaded once.
    directory = policy_dir(**{f"{i}_{kind}__rego": texts[kind] for i, kind in enumerate(order)})
    assert decide(ANTHROPIC_PII, dirs=[directory]).decision == "deny"
    assert decide({"llm_provider": "Anthropic"}, dirs=[directory]).decision == "audit"
    assert decide({"llm_provider": "OpenAI"}, dirs=[directory]).decision == "allow"


def test_precedence_across_inline_rules_and_directories(policy_dir):
    directory = policy_dir(audit__rego=AUDIT)
    result = decide(ANTHROPIC_PII, dirs=[directory], rules=[ALLOW, DENY])
    assert result.decision == "deny"
    assert result.values == ["allow", "audit", "deny"]


def test_deny_and_audit_sets_are_decisions_with_reasons():
    rule = '''package busted
import rego.v1
deny contains "no pii" if input.pii_detected
audit contains sprintf("provider %s", [input.llm_provider]) if input.llm_provider != ""
'''
    result = decide(ANTHROPIC_PII, rules=[rule])
    assert result.decision == "deny"
    assert result.reasons == ["no pii", "provider Anthropic"]
    assert decide({"llm_provider": "OpenAI"}, rules=[rule]).decision == "audit"


def test_both_styles_combine():
    sets = 'package busted\nimport rego.v1\naudit contains "seen" if input.llm_provider != ""\n'
    assert decide(ANTHROPIC_PII, rules=[SEED_EXAMPLE, sets]).decision == "deny"
    only_audit = decide({"llm_provider": "OpenAI"}, rules=[SEED_EXAMPLE, sets])
    assert only_audit.decision == "audit"
    assert only_audit.reasons == ["seen"]


def test_reasons_set_is_carried_deduplicated_and_sorted():
    rules = [
        'package busted\nimport rego.v1\ndecision := "audit" if true\nreasons contains "b" if true\n',
        'package busted\nimport rego.v1\nreasons contains "a" if true\nreasons contains "b" if true\n',
    ]
    assert decide({}, rules=rules).reasons == ["a", "b"]


def test_boolean_deny_rule_denies_without_reason():
    result = decide({"x": 1}, rules=["package busted\nimport rego.v1\ndeny if input.x == 1\n"])
    assert (result.decision, result.reasons) == ("deny", [])


def test_no_matching_rule_is_allow():
    result = decide({"llm_provider": "OpenAI"}, rules=[DENY])
    assert (result.decision, result.error, result.values) == ("allow", "", [])


def test_no_rule_in_package_busted_is_allow():
    result = decide({}, rules=["package other\nimport rego.v1\nx := 1\n"])
    assert result.decision == "allow"


def test_unexpected_decision_value_is_an_error_with_the_default():
    block = 'package busted\nimport rego.v1\ndecision := "block" if true\n'
    result = decide({}, rules=[block], on_error="deny")
    assert result.decision == "deny"
    assert '"block"' in result.error
    # A valid decision still wins; the odd value is still reported.
    with_deny = decide({"pii_detected": True}, rules=[block, DENY], on_error="allow")
    assert with_deny.decision == "deny" and '"block"' in with_deny.error


def test_rego_side_decision_follows_precedence_too():
    # Policies and tests that read data.busted.decision see the combined decision.
    reader = '''package busted
import rego.v1
reasons contains sprintf("final %s", [decision]) if input.llm_provider == "Anthropic"
'''
    result = decide(ANTHROPIC_PII, rules=[SEED_EXAMPLE.replace("Anthropic traffic", "x"), reader],
                    prefer_vm=False)
    assert result.reasons == ["final deny"]
