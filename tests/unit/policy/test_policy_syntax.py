"""Rego v0 and v1 side by side, each file read in its own dialect."""

from __future__ import annotations

import pytest
from policy_helpers import SEED_EXAMPLE, decide

from busted.policy import loader
from busted.policy.engine import PolicyLoadError

V1 = '''package busted

import rego.v1

default decision := "allow"

decision := "deny" if {
	input.llm_provider == "Anthropic"
	contains(input.tls_payload, "berko")
}

reasons contains "demo word" if contains(input.tls_payload, "berko")
'''

V1_WITHOUT_IMPORT = '''package busted

audit contains msg if {
	some tool in ["exec", "shell"]
	input.mcp_tool == tool
	msg := sprintf("tool %s", [tool])
}
'''

SEED_DEMO = '''package busted
  default decision = "allow"
  decision = "deny" {
      input.llm_provider == "Anthropic"
      contains(input.tls_payload, "berko")
  }'''


def test_dialect_is_detected_per_file(policy_dir):
    directory = policy_dir(seed__rego=SEED_EXAMPLE, v1__rego=V1, bare__rego=V1_WITHOUT_IMPORT)
    dialects = loader.load([directory]).dialects()
    assert {name.rsplit("/", 1)[1]: d for name, d in dialects.items()} == {
        "bare.rego": "v1", "seed.rego": "v0", "v1.rego": "v1",
    }


def test_v0_and_v1_files_evaluate_together(policy_dir):
    directory = policy_dir(seed__rego=SEED_EXAMPLE, v1__rego=V1, bare__rego=V1_WITHOUT_IMPORT)
    berko = {"llm_provider": "Anthropic", "tls_payload": "hi berko"}
    result = decide(berko, dirs=[directory])
    assert result.decision == "deny"
    assert result.reasons == ["demo word"]
    assert decide({"llm_provider": "Anthropic"}, dirs=[directory]).decision == "audit"
    assert decide({"mcp_tool": "exec"}, dirs=[directory]).reasons == ["tool exec"]


def test_seed_demo_rule_works_exactly_as_written():
    berko = {"llm_provider": "Anthropic", "tls_payload": "x berko y"}
    hello = {"llm_provider": "Anthropic", "tls_payload": "hello"}
    assert decide(berko, rules=[SEED_DEMO]).decision == "deny"
    assert decide(hello, rules=[SEED_DEMO]).decision == "allow"


@pytest.mark.parametrize("prefer_vm", [True, False], ids=["vm", "interpreter"])
def test_a_v1_only_set_uses_the_vm_when_asked(prefer_vm):
    policy = loader.load(rules=[V1]).compile(prefer_vm=prefer_vm)
    assert policy.uses_vm is prefer_vm


def test_a_v0_file_puts_the_set_on_the_interpreter():
    policy = loader.load(rules=[V1, SEED_EXAMPLE]).compile()
    assert not policy.uses_vm


def test_broken_v1_file_is_not_silently_read_as_v0():
    # Read as v0 this parses (the engine only warns that `if` becomes a rule name) and
    # would then deny everything: it must be reported as the v1 error it is.
    broken = '''package busted
decision := "deny" if {
	input.x == 1
}
q { true }
'''
    with pytest.raises(PolicyLoadError) as info:
        loader.load(rules=[broken])
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == ("rule#1", 5)
    assert "if" in problem.reason


def test_broken_v0_file_gets_the_v0_error():
    broken_v0 = 'package busted\ndefault decision = "allow"\ndecision = "deny" {\n  input.x ==\n}\n'
    with pytest.raises(PolicyLoadError) as info:
        loader.load(rules=[broken_v0])
    (problem,) = info.value.problems
    assert problem.line == 3 and "if" not in problem.reason  # the v0 parser's complaint
