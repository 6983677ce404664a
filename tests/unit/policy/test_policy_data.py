"""data.json: loaded at the root of data, merged across directories, clashes reported."""

from __future__ import annotations

import pytest
from policy_helpers import decide

from busted.policy import loader
from busted.policy.engine import PolicyLoadError

RULE = (
    "package busted\nimport rego.v1\n"
    "deny contains p if { some p in data.cfg.blocked; input.llm_provider == p }\n"
)


def test_data_json_feeds_the_policies(policy_dir):
    directory = policy_dir(p__rego=RULE, data__json='{"cfg": {"blocked": ["Groq"]}}')
    assert decide({"llm_provider": "Groq"}, dirs=[directory]).decision == "deny"
    assert decide({"llm_provider": "OpenAI"}, dirs=[directory]).decision == "allow"


def test_data_from_several_directories_is_merged(policy_dir):
    first = policy_dir(p__rego=RULE, data__json='{"cfg": {"blocked": ["Groq"]}}')
    second = policy_dir(data__json='{"cfg": {"other": 1}}')
    policy_set = loader.load([first, second])
    assert policy_set.data == {"cfg": {"blocked": ["Groq"], "other": 1}}


def test_clashing_data_is_an_error(policy_dir):
    first = policy_dir(data__json='{"cfg": {"blocked": ["Groq"]}}')
    second = policy_dir(data__json='{"cfg": {"blocked": ["Mistral"]}}')
    with pytest.raises(PolicyLoadError) as info:
        loader.load([first, second])
    assert "cfg.blocked" in info.value.problems[0].reason


def test_shipped_settings_can_be_changed_in_data_json(policy_dir):
    import shutil

    from policy_helpers import SHIPPED

    directory = policy_dir()
    for path in SHIPPED.glob("*.rego"):
        shutil.copy(path, directory)
    (directory / "data.json").write_text('{"busted_config": {"audited_providers": ["OpenAI"]}}')
    result = decide({"llm_provider": "OpenAI"}, dirs=[directory])
    assert result.decision == "audit"
    # Settings missing from data.json fall back to the defaults in lib.rego.
    assert decide({"llm_provider": "Mistral", "pii_detected": True}, dirs=[directory]).decision == "deny"
