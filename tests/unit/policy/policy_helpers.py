"""Helpers for the policy unit tests (a uniquely named module: several test
directories have a conftest.py, so importing from "conftest" would be ambiguous)."""

from __future__ import annotations

from pathlib import Path

from busted.policy import loader
from busted.policy.decision import Decision, build_decider

SHIPPED = Path(__file__).resolve().parents[3] / "policies"

SEED_EXAMPLE = '''package busted

default decision = "allow"

# Deny requests containing PII to external providers
decision = "deny" {
    input.pii_detected == true
    input.llm_provider != "Ollama"
}

# Audit all Anthropic traffic
decision = "audit" {
    input.llm_provider == "Anthropic"
}
'''


def decide(event: dict, *, dirs=(), rules=(), on_error="allow", prefer_vm=True) -> Decision:
    policy_set = loader.load(dirs, rules)
    return build_decider(policy_set, on_error, prefer_vm=prefer_vm).decide(event)
