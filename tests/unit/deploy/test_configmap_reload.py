"""Policies from a Kubernetes ConfigMap volume reload live. The kubelet writes a new
version of the ConfigMap into a fresh hidden directory and swaps the ``..data`` symlink
to it in one rename; the policy files are symlinks through ``..data``. The monitor's
reload (busted.policy.reload) must see that swap, including files added and removed,
with the root-only permission check on (the DaemonSet runs as root)."""

from __future__ import annotations

import os
from pathlib import Path

from busted.policy.reload import POLL_INTERVAL_S, LivePolicy

AUDIT = 'package busted\nimport rego.v1\naudit contains "a" if input.llm_provider == "Anthropic"\n'
DENY = 'package busted\nimport rego.v1\ndeny contains "a" if input.llm_provider == "Anthropic"\n'
EXTRA = 'package busted\nimport rego.v1\naudit contains "o" if input.llm_provider == "OpenAI"\n'


def write_version(volume: Path, version: str, files: dict[str, str]) -> None:
    """What the kubelet's atomic writer does: a new ..<version> directory, ..data
    swapped to it by rename, a top-level symlink per key, the old version removed."""
    new = volume / f"..{version}"
    new.mkdir(mode=0o755)
    for name, text in files.items():
        (new / name).write_text(text)
        (new / name).chmod(0o644)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    (volume / "..data_tmp").symlink_to(new.name)
    os.rename(volume / "..data_tmp", volume / "..data")
    for name in files:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")
    for entry in list(volume.iterdir()):
        if entry.is_symlink() and not entry.name.startswith("..") and not entry.exists():
            entry.unlink()  # a key gone from the ConfigMap
    if old:
        for f in (volume / old).iterdir():
            f.unlink()
        (volume / old).rmdir()


def settle(live: LivePolicy, now: list[float]) -> bool:
    changed = False
    for _ in range(2):
        now[0] += POLL_INTERVAL_S
        changed = live.poll(now[0]) or changed
    return changed


def test_configmap_swap_is_reloaded(tmp_path):
    volume = tmp_path / "policies"
    volume.mkdir(mode=0o755)
    write_version(volume, "2026_12_06_10_00_00.1", {"rule.rego": AUDIT})
    live = LivePolicy([volume], strict_perms=os.geteuid() == 0)
    now = [100.0]
    assert live.decider.decide({"llm_provider": "Anthropic"}).decision == "audit"

    write_version(volume, "2026_12_06_10_05_00.2", {"rule.rego": DENY, "extra.rego": EXTRA})
    assert settle(live, now)
    assert live.decider.decide({"llm_provider": "Anthropic"}).decision == "deny"
    assert live.decider.decide({"llm_provider": "OpenAI"}).decision == "audit"

    write_version(volume, "2026_12_06_10_10_00.3", {"rule.rego": AUDIT})
    assert settle(live, now)
    assert live.decider.decide({"llm_provider": "OpenAI"}).decision == "allow"
    assert live.reloads == 2 and live.reload_errors == 0
