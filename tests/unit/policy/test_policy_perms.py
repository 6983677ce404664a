"""StrictModes for policies: a root monitor refuses policy files other users could change,
at start and at each reload, and picks the policy up once the permissions are fixed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from busted.policy import perms
from busted.policy.reload import POLL_INTERVAL_S, LivePolicy

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="judges files for root; needs chown")

AUDIT = 'package busted\nimport rego.v1\naudit contains "a" if input.llm_provider == "Anthropic"\n'
DENY = 'package busted\nimport rego.v1\ndeny contains "d" if input.llm_provider == "Anthropic"\n'
EVENT = {"llm_provider": "Anthropic"}
NOBODY = 65534


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir(mode=0o755)
    (directory / "a.rego").write_text(AUDIT)
    (directory / "a.rego").chmod(0o644)
    return directory


def test_root_owned_policies_pass(policies):
    assert perms.problems([policies]) == []


def test_each_way_another_user_could_change_the_policy_is_named(policies, tmp_path):
    os.chown(policies / "a.rego", NOBODY, NOBODY)
    (policies / "data.json").write_text("{}")
    (policies / "data.json").chmod(0o666)
    found = perms.problems([policies])
    assert found == [
        f"refusing the policy file {policies / 'a.rego'}: it belongs to uid 65534, not to root.",
        f"refusing the policy file {policies / 'data.json'}: other users may write it (mode 0666).",
    ]
    policies.chmod(0o775)
    assert perms.problems([policies])[0] == \
        f"refusing the policy directory {policies}: other users may write it (mode 0775)."
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (open_dir / "p").mkdir()
    assert "other users can change" in perms.problems([open_dir / "p"])[0]


def test_reload_refuses_a_foreign_new_file_until_it_is_fixed(policies, caplog):
    caplog.set_level(logging.ERROR, logger="busted.policy")
    live = LivePolicy([policies], strict_perms=True)
    now = 100.0

    def settle() -> bool:
        nonlocal now
        results = []
        for _ in range(2):
            now += POLL_INTERVAL_S
            results.append(live.poll(now))
        return any(results)

    assert live.decider.decide(EVENT).decision == "audit"
    planted = policies / "b.rego"
    planted.write_text(DENY)
    os.chown(planted, NOBODY, NOBODY)
    assert not settle()
    assert live.decider.decide(EVENT).decision == "audit"  # the previous policy stays
    assert "refusing the policy file" in caplog.text and "b.rego" in caplog.text
    os.chown(planted, 0, 0)  # fixing the owner is a change: the reload comes
    assert settle()
    assert live.decider.decide(EVENT).decision == "deny"


def test_strict_perms_at_start_raise_a_plain_error(policies):
    os.chown(policies / "a.rego", NOBODY, NOBODY)
    with pytest.raises(perms.PolicyPermsError) as info:
        LivePolicy([policies], strict_perms=True)
    assert "it belongs to uid 65534, not to root" in info.value.message
    assert "--insecure-policy-perms" in info.value.hint
    LivePolicy([policies])  # not strict (a monitor without root, or the override)
