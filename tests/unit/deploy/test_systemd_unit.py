"""The systemd unit as users install it: rendered for this checkout by
deploy/systemd/install-service.sh, accepted by ``systemd-analyze verify``, hardened
(``systemd-analyze security --offline``), and granting exactly the capabilities
``busted doctor`` checks for. systemd does not run here (PID 1 is not systemd), so the
unit is checked, not started; tests/privileged/test_systemd_sandbox.py runs the monitor
under the unit's restrictions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from busted.kernel import features

REPO = Path(__file__).resolve().parents[3]
MAX_EXPOSURE = 4.0  # bench/README.md "Deployment" records the figure


@pytest.fixture(scope="module")
def unit(tmp_path_factory) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install -y systemd (deploy/setup-host.sh)")
    path = tmp_path_factory.mktemp("unit") / "busted.service"
    subprocess.run(["bash", str(REPO / "deploy/systemd/install-service.sh"), "--render-only",
                    str(path)], check=True)
    return path


def settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_rendered_for_this_checkout(unit):
    text = unit.read_text()
    assert "@PREFIX@" not in text
    exec_start = settings(unit)["ExecStart"][0].split()
    assert exec_start[0] == str(REPO / ".venv/bin/busted") and exec_start[1] == "monitor"
    assert os.access(exec_start[0], os.X_OK)


def test_systemd_analyze_verify_is_clean(unit):
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_security_exposure(unit):
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_writable_paths_and_protections(unit):
    s = settings(unit)
    # A checkout under /tmp (a CI clone, say) keeps the host's /tmp: it would vanish.
    in_tmp = str(REPO).startswith(("/tmp/", "/var/tmp/"))
    assert s["ProtectSystem"] == ["strict"] and s["PrivateTmp"] == ["no" if in_tmp else "yes"]
    assert s["ReadWritePaths"] == ["-/run/busted -/run/lock"]
    assert s["StateDirectory"] == ["busted"] and s["LogsDirectory"] == ["busted"]
    assert s["NoNewPrivileges"] == ["yes"]
    # bcc compiles against /lib/modules/$(uname -r)/build: it must stay visible.
    assert "ProtectKernelModules" not in s


def test_capabilities_are_those_doctor_checks(unit):
    granted = set(settings(unit)["CapabilityBoundingSet"][0].split())
    wanted = {name for name, _ in [*features.NEEDED_CAPS.values(), *features.USEFUL_CAPS.values()]}
    assert granted == wanted


def test_doctor_names_capabilities_a_unit_dropped(tmp_path, monkeypatch):
    (tmp_path / "proc/self").mkdir(parents=True)
    # CAP_BPF and CAP_PERFMON only (bits 39, 38).
    (tmp_path / "proc/self/status").write_text(f"Name:\tx\nCapEff:\t{(1 << 39) | (1 << 38):016x}\n")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("INVOCATION_ID", "0123")
    found = features.probe(tmp_path)
    check = found.get("capabilities")
    assert not check.ok and "CAP_SYS_ADMIN" in check.detail and "CAP_BPF" not in check.detail
    assert "CapabilityBoundingSet=" in check.fix
    assert "CAP_SYS_PTRACE" in found.get("capabilities:optional").detail
    assert "ProtectKernelModules" in found.get("headers").fix


def test_doctor_on_a_kernel_without_cap_bpf(tmp_path, monkeypatch):
    """Before Linux 5.8 there is no CAP_BPF or CAP_PERFMON: full root is enough."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/self/status").write_text(f"CapEff:\t{(1 << 38) - 1:016x}\n")
    (tmp_path / "proc/sys/kernel/cap_last_cap").write_text("37\n")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert features.probe(tmp_path).ok("capabilities")
