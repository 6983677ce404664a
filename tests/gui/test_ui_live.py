"""`busted ui` against a real daemon: the same events the output worker printed, the
no-daemon message, and the permission message for a user outside group busted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from monitor_process import Monitor
from polling import wait_for

from busted_gui.model import provider_of

pytestmark = pytest.mark.gui

def test_ui_shows_the_events_the_output_worker_printed(launch, short_tmp):
    run = short_tmp / "run"
    # The window first: it must say that no daemon runs, then pick the daemon up.
    ui = launch("--runtime-dir", str(run))
    state = ui.wait_state(lambda s: s["state"] == "no-daemon", what="the no-daemon message")
    assert "sudo busted monitor" in state["hint"]
    wait_for(lambda: any("No Busted daemon" in line for line in ui.stderr),
             what="the no-daemon message on stderr")

    monitor = Monitor(run, "--source", "synthetic", "--rate", "200", "--count", "600")
    try:
        ui.wait_state(lambda s: s["state"] == "live" and s["received"] > 0, timeout=30,
                      what="the window to go live")
        wait_for(lambda: len(monitor.events()) >= 600 or monitor.proc.poll() is not None,
                 timeout=60, what="the monitor to print its events")
        printed = {e["seq"]: e for e in monitor.events()}
        assert len(printed) == 600, monitor.stderr[-20:]
        # The window may have subscribed after the first events went out, never later
        # than the last ones: everything it has is printed, and it has the tail.
        state = ui.wait_state(lambda s: s["seqs"] and s["seqs"][-1] == max(printed),
                              timeout=30, what="the last printed event in the window")
        shown = state["seqs"]
        assert set(shown) <= set(printed)
        assert len(shown) >= 300, f"the window saw only {len(shown)} of 600"
        assert shown == sorted(shown)
        assert shown == list(range(shown[0], shown[-1] + 1)), "events missing in the middle"
        assert state["missed"] == 0
        assert state["daemon_stats"] and "workers" in state["daemon_stats"]

        # Row for row, the table says what the output worker printed.
        state = ui.command(cmd="filter", text="")
        for row in state["rows"]:
            event = printed[row["seq"]]
            cells = row["cells"]
            assert cells[1] == f"{event.get('process_name')} ({event.get('pid')})"
            assert cells[2] == provider_of(event)
            assert cells[3].startswith(event.get("llm_model") or "")
            assert cells[6] == (event.get("policy") or "-")
        providers = {provider_of(e) for e in printed.values()}
        assert set(state["providers"]) <= providers - {None, ""}
    finally:
        monitor.stop()
    # The daemon is gone: the window says so instead of showing old data as live.
    ui.wait_state(lambda s: s["state"] in ("no-daemon", "stale"), timeout=30,
                  what="the window to notice the daemon stopped")


def test_permission_message_for_a_user_outside_group_busted(launch, short_tmp):
    if os.geteuid() != 0:
        pytest.fail("this test runs as root: it sets up a root-owned socket and drops to nobody")
    # Like /run/busted: a root-owned 0750 directory and a 0660 socket.
    run = short_tmp / "run"
    run.mkdir(mode=0o750)
    os.chmod(short_tmp, 0o755)
    code = (
        "import os, sys, time, zmq; ctx = zmq.Context(); s = ctx.socket(zmq.PUB); "
        f"s.bind('ipc://{run}/events.sock'); os.chmod('{run}/events.sock', 0o660); "
        "print('bound', flush=True); sys.stdin.read()"
    )
    publisher = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert publisher.stdout.readline().strip() == "bound"
        hooks = short_tmp / "hooks-nobody"
        hooks.mkdir()
        os.chown(hooks, 65534, 65534)
        ui = launch("--runtime-dir", str(run), hooks_dir=hooks,
                    prefix=["setpriv", "--reuid", "nobody", "--regid", "nogroup",
                            "--clear-groups", "env", "HOME=/tmp"])
        state = ui.wait_state(lambda s: s["state"] == "permission", timeout=30,
                              what="the permission message")
        assert "Permission denied" in state["message"]
        assert "usermod -aG busted" in state["hint"]
        wait_for(lambda: any("Permission denied" in line for line in ui.stderr),
                 what="the permission message on stderr")
        # Still running and drawing frames: a message, not a crash.
        frame = state["frame"]
        ui.wait_state(lambda s: s["frame"] > frame + 5, what="more frames")
        ui.screenshot(hooks / "permission.png")
        assert ui.proc.poll() is None
    finally:
        publisher.stdin.close()
        publisher.wait(timeout=10)
