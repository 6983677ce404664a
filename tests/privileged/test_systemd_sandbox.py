"""The hardened systemd unit lets busted do its work: ``busted monitor`` run under the
unit's own restrictions (read from the rendered unit file and applied with the same
kernel mechanisms by harness/unit_sandbox.py — PID 1 here is not systemd) attaches every
probe and captures a TLS client's write. This is what says the hardening in
deploy/systemd/busted.service.in stops short of breaking capture; a setting that broke it
(a capability dropped, a path made read-only, a system call filtered) fails here."""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from polling import wait_for

from .harness.tls_echo import CLIENT, tls_echo_server

REPO = Path(__file__).resolve().parents[2]
SANDBOX = Path(__file__).parent / "harness" / "unit_sandbox.py"


@pytest.fixture
def unit(tmp_path) -> dict[str, list[str]]:
    path = tmp_path / "busted.service"
    subprocess.run(["bash", str(REPO / "deploy/systemd/install-service.sh"), "--render-only",
                    str(path)], check=True)
    return path


def writable_paths(unit: Path, runtime_dir: Path) -> list[str]:
    """ReadWritePaths=, StateDirectory=, LogsDirectory= of the unit; its /run/busted is
    this test's own runtime directory (a monitor elsewhere may use /run/busted)."""
    paths = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "ReadWritePaths":
            paths += [p.lstrip("-") for p in value.split()]
        elif key == "StateDirectory":
            paths.append(f"/var/lib/{value}")
        elif key == "LogsDirectory":
            paths.append(f"/var/log/{value}")
    return [str(runtime_dir) if p == "/run/busted" else p for p in paths]


def test_monitor_captures_under_the_units_restrictions(unit, tmp_path):
    for tool in ("unshare", "setpriv", "systemd-analyze"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (deploy/setup-host.sh installs util-linux and systemd)")
    try:
        import seccomp  # noqa: F401
    except ImportError:
        pytest.fail("python3-seccomp is missing: apt-get install -y python3-seccomp (deploy/setup-host.sh)")
    # What the unit's ExecStartPre does: the runtime directory, root:busted 0750.
    runtime = Path(f"/run/busted-sbx-{uuid.uuid4().hex[:8]}")
    runtime.mkdir(mode=0o750)
    os.chown(runtime, 0, grp.getgrnam("busted").gr_gid)
    exec_start = next(line.split("=", 1)[1].split() for line in unit.read_text().splitlines()
                      if line.startswith("ExecStart="))
    command = [exec_start[0], "monitor", "--format", "json", "--runtime-dir", str(runtime),
               "--policy-dir", str(REPO / "policies")]
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", sys.executable, str(SANDBOX),
         str(unit), *writable_paths(unit, runtime), "--", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    events: list[dict] = []
    stderr: list[str] = []
    threading.Thread(target=lambda: [events.append(json.loads(x)) for x in proc.stdout
                                     if x.startswith("{")], daemon=True).start()
    threading.Thread(target=lambda: [stderr.append(x) for x in proc.stderr], daemon=True).start()
    client = None
    try:
        def ready():
            assert proc.poll() is None, "the sandboxed monitor exited:\n" + "".join(stderr[-40:])
            return any("capture ready" in line for line in stderr)
        # (No check of bcc's "cannot attach" lines: a process that exits while its files
        # are being probed makes one, sandbox or not. The capture below is the check.)
        wait_for(ready, timeout=240, what="the sandboxed monitor to be ready")

        with tls_echo_server(tmp_path) as port:
            mark = f"sandbox-{uuid.uuid4().hex}"
            client = subprocess.Popen([sys.executable, "-c", CLIENT,
                                       f"https://127.0.0.1:{port}/v1/chat", mark])
            wait_for(lambda: any(e.get("event_type") == "TLS_DATA_WRITE"
                                 and mark in (e.get("tls_payload") or "") for e in list(events)),
                     timeout=60, what="the client's write, captured in the sandbox")
        assert (runtime / "events.sock").exists()
    finally:
        if client is not None:
            client.kill()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait(30)
        shutil.rmtree(runtime, ignore_errors=True)
    assert code == 0, "".join(stderr[-40:])
