"""Helpers for the policy unit tests: write policy files, decide events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

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


@pytest.fixture
def policy_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write files {name: text} into a fresh directory and return it."""
    counter = [0]

    def make(**files: str) -> Path:
        counter[0] += 1
        directory = tmp_path / f"p{counter[0]}"
        directory.mkdir()
        for name, text in files.items():
            (directory / name.replace("__", ".")).write_text(text)
        return directory

    return make


def decide(event: dict, *, dirs=(), rules=(), on_error="allow", prefer_vm=True) -> Decision:
    policy_set = loader.load(dirs, rules)
    return build_decider(policy_set, on_error, prefer_vm=prefer_vm).decide(event)
