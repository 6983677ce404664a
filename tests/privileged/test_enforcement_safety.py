"""`busted monitor --enforce` safety: no process is left stopped, and a dry run acts on
nothing. Each test starts its own monitor (one enforcing monitor per host: these run
after test_enforcement.py's has stopped)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from polling import wait_for

from busted.kernel.procstat import is_stopped
from busted.proctitle import comm_name

from .harness.events import summarize
from .harness.monitor import MonitorProcess, start_enforcing, stop_checked
from .harness.pki import BORING_HOST
from .test_enforcement import BERKO_RULE, _block_rule, _curl, _enforcement, _marker

pytestmark = pytest.mark.privileged


# --- safety and dry run ---------------------------------------------------------------------

def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _worker_pid(monitor: MonitorProcess, role: str) -> int:
    """The pid of the monitor's running ``role`` worker. Checked against /proc: stats can
    name a worker that was just restarted, whose old pid another process may have
    taken (pids wrap at 32768 here), and stopping that process would hang the test."""
    def find():
        worker = (monitor.stats.get("workers") or {}).get(role) or {}
        pid = worker.get("pid")
        if not pid:
            return None
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            parent = _parent_of(pid)
            # workers are forked by the monitor's fork server, a child of the monitor
            ours = monitor.proc.pid in (parent, _parent_of(parent))
        except (OSError, ValueError, IndexError):
            return None
        return pid if comm == comm_name(role) and ours else None
    return wait_for(find, 15, f"the {role} worker's pid in the published stats")


@pytest.mark.parametrize("frozen", ["classify", "capture"])
def test_killing_the_monitor_while_a_process_is_held_leaves_it_running(tls_server, clients, frozen):
    """``classify`` frozen: capture knows the hold and told the watchdog. ``capture``
    frozen: it never reads the held write's record; only the kernel's note of the stop
    (the held_pids map the watchdog holds) tells the watchdog whom to resume."""
    monitor = start_enforcing(BERKO_RULE, extra_args=("--hold-deadline-ms", "8000"))
    classify = capture = 0
    try:
        classify = _worker_pid(monitor, "classify")
        capture = _worker_pid(monitor, "capture")
        # No verdict will come: the write stays held.
        os.kill(classify if frozen == "classify" else capture, signal.SIGSTOP)
        marker = _marker("held")
        proc = clients.ns.popen(clients.openai_argv(f"say {marker}"), text=True)
        seen = []

        def stopped():
            seen.append(is_stopped(proc.pid))
            return seen[-1] or None

        try:
            wait_for(stopped, 30, "the client to be held (stopped)")
        except AssertionError:
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"stopped seen as {set(seen)}, exit {proc.returncode}: {err[-800:]}\n"
                                 f"{monitor.stderr_tail(20)}") from None
        held_at = time.monotonic()
        os.kill(monitor.proc.pid, signal.SIGKILL)
        os.kill(capture, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        resumed_after = time.monotonic() - held_at
        assert proc.returncode == 0, err[-1500:]
        assert resumed_after < 8.0, f"resumed only after {resumed_after:.1f}s (the deadline)"
        assert marker.encode() in tls_server.received()
    finally:
        for pid in (classify, capture):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        monitor.kill()
        monitor.stop()


def test_dry_run_acts_on_nothing(tls_server, clients, namespace, blocked_addr):
    monitor = start_enforcing(BERKO_RULE, _block_rule(blocked_addr), extra_args=("--dry-run",))
    try:
        marker = _marker("berko")
        result = clients.openai(f"tell {marker} a joke")
        assert marker.encode() in tls_server.received()
        event = _enforcement(monitor, result.pid, "would-kill")
        assert event.get("policy") == "deny", summarize(event)

        def reported():
            run = _curl(f"https://{BORING_HOST}/", namespace, resolve=f"{BORING_HOST}:443:{blocked_addr}")
            assert "Operation not permitted" not in run.stderr, run.stderr
            return next((e for e in monitor.events.snapshot() if e.get("event_type") == "ENFORCEMENT"
                         and e.get("action") == "would-block-connect"), None)

        event = wait_for(reported, 20, "a would-block-connect event")
        assert event.get("dst_ip") == blocked_addr, summarize(event)
        actions = {e.get("action") for e in monitor.events.snapshot() if e.get("event_type") == "ENFORCEMENT"}
        assert actions <= {"would-kill", "would-block-connect"}, actions
    finally:
        stop_checked(monitor)
