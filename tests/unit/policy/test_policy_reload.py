"""Hot reload: a good edit is live within two polls, a broken edit keeps the old policy."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from busted.policy.engine import PolicyLoadError
from busted.policy.reload import POLL_INTERVAL_S, LivePolicy

AUDIT = 'package busted\nimport rego.v1\naudit contains "anthropic" if input.llm_provider == "Anthropic"\n'
DENY = 'package busted\nimport rego.v1\ndeny contains "anthropic" if input.llm_provider == "Anthropic"\n'
BROKEN = 'package busted\nimport rego.v1\n\ndeny contains "x" if {\n  input.a ==\n}\n'
EVENT = {"llm_provider": "Anthropic"}


class Clock:
    """Poll times, stepped by hand: the test never sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def step(self) -> float:
        self.now += POLL_INTERVAL_S
        return self.now


def settle(live: LivePolicy, clock: Clock) -> bool:
    """What the worker's ticks do in the ~0.5 s after an edit: two polls."""
    first = live.poll(clock.step())
    second = live.poll(clock.step())
    return first or second


@pytest.fixture
def setup(tmp_path: Path):
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "rule.rego").write_text(AUDIT)
    return directory, LivePolicy([directory]), Clock()


def test_good_edit_is_loaded_within_two_polls(setup):
    directory, live, clock = setup
    assert live.decider.decide(EVENT).decision == "audit"
    assert not settle(live, clock)  # nothing changed yet
    (directory / "rule.rego").write_text(DENY)
    assert settle(live, clock)
    assert live.decider.decide(EVENT).decision == "deny"
    assert live.reloads == 1
    # Two polls are 2 x POLL_INTERVAL_S of worker ticks: well inside the 2 s goal.
    assert 2 * POLL_INTERVAL_S <= 1.0


def test_broken_edit_keeps_previous_policy_and_logs_file_line(setup, caplog):
    directory, live, clock = setup
    caplog.set_level(logging.ERROR, logger="busted.policy")
    (directory / "rule.rego").write_text(BROKEN)
    assert not settle(live, clock)
    assert live.decider.decide(EVENT).decision == "audit"
    assert live.reload_errors == 1
    assert f"{directory / 'rule.rego'}:6:1" in caplog.text
    # Reported once, not on every poll while it stays broken.
    caplog.clear()
    for _ in range(5):
        live.poll(clock.step())
    assert caplog.text == "" and live.reload_errors == 1
    # Fixing the file brings the new policy in.
    (directory / "rule.rego").write_text(DENY)
    assert settle(live, clock)
    assert live.decider.decide(EVENT).decision == "deny"
    assert live.last_error == ""


def test_new_and_removed_files_and_data_json_are_noticed(setup):
    directory, live, clock = setup
    (directory / "more.rego").write_text(
        'package busted\nimport rego.v1\ndeny contains w if { some w in data.words; input.x == w }\n'
    )
    (directory / "data.json").write_text('{"words": ["a"]}')
    assert settle(live, clock)
    assert live.decider.decide({"x": "a"}).decision == "deny"
    (directory / "data.json").write_text('{"words": ["b"]}')
    assert settle(live, clock)
    assert live.decider.decide({"x": "a"}).decision == "allow"
    (directory / "rule.rego").unlink()
    assert settle(live, clock)
    assert live.decider.decide(EVENT).decision == "allow"


def test_test_files_are_not_part_of_the_live_policy(setup):
    directory, live, clock = setup
    (directory / "rule_test.rego").write_text(
        'package busted\nimport rego.v1\ndeny contains "from a test" if true\n'
    )
    assert not settle(live, clock)
    assert live.decider.decide({}).decision == "allow"


def test_broken_policy_at_start_up_raises(tmp_path):
    (tmp_path / "bad.rego").write_text(BROKEN)
    with pytest.raises(PolicyLoadError) as info:
        LivePolicy([tmp_path])
    assert str(info.value).startswith(f"{tmp_path / 'bad.rego'}:6:1: ")
