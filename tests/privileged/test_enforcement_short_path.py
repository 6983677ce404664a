"""Held writes take the short path (classify judges and answers them, as datagrams on
pipe/answers.sock) and keep the fail rules: a classify that never answers leaves the
held process to capture's deadline, which resumes it (fail open) or kills it
(``--fail-closed``). Real probes, a real SDK client; each test starts its own
enforcing monitor (one per host).

Another enforcing capture on the host (say one left over by a killed run) defeats these
tests: it resumes what this one holds."""

from __future__ import annotations

import os
import signal
import time

import pytest
from polling import wait_for

from busted import control_client
from busted.proctitle import comm_name

from .harness.events import summarize
from .harness.monitor import MonitorProcess, start_enforcing, stop_checked
from .test_enforcement import BERKO_RULE, _marker

pytestmark = pytest.mark.privileged

DEADLINE_MS = 1500


def _status(monitor: MonitorProcess) -> dict:
    return control_client.request(str(monitor.runtime_dir), "status")


def _worker(monitor: MonitorProcess, role: str) -> dict:
    """The running worker's status row once it has one, checked against /proc (a pid
    named in a status can be a just-restarted worker's old one)."""
    def find():
        worker = (_status(monitor).get("workers") or {}).get(role) or {}
        pid = worker.get("pid")
        try:
            with open(f"/proc/{pid}/comm") as f:
                return worker if f.read().strip() == comm_name(role) else None
        except (OSError, TypeError):
            return None
    return wait_for(find, 20, f"the {role} worker in `busted status`")


def test_classify_answers_held_writes_and_the_policy_stage_reports_its_verdict(tls_server, clients):
    """An allowed request, held, is answered (the client completes) and reported with the
    policy's fields, its identity and nothing of the short path's bookkeeping. (Denied
    requests: test_enforcement.py.)"""
    monitor = start_enforcing(BERKO_RULE)
    try:
        pids: list[int] = []

        def a_held_request():
            # A new process is made holdable once capture has seen its exec: on a loaded
            # machine a client can be faster than that, so try again with a new one.
            result = clients.openai(f"say {_marker('hello')}", check=False, timeout=60)
            assert result.returncode == 0, result.stderr[-1500:]
            pids.append(result.pid)
            return next((e for e in monitor.events.snapshot() if e.get("pid") in pids
                         and e.get("content_class") == "LLM_REQUEST" and e.get("held")), None)

        event = wait_for(a_held_request, 120, "a held request in the monitor's output", interval=0.5)
        assert event.get("policy") == "allow" and event.get("identity_id"), summarize(event)
        assert "answered" not in event and not event.get("provisional"), summarize(event)
        wait_for(lambda: _worker(monitor, "classify").get("held_judged", 0) >= 1, 20,
                 "classify's count of held writes it judged")
    except BaseException:
        monitor.stop()
        raise
    stop_checked(monitor)


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_a_held_write_classify_never_answers_gets_the_fail_mode_at_the_deadline(
        tls_server, clients, fail_closed):
    extra = ("--hold-deadline-ms", str(DEADLINE_MS)) + (("--fail-closed",) if fail_closed else ())
    monitor = start_enforcing(BERKO_RULE, extra_args=extra)
    late = "enforce_late_killed" if fail_closed else "enforce_late_released"
    frozen: set[int] = set()
    results = []

    def a_late_hold():
        # Classify frozen is as good as crashed: no answer comes. The supervisor may
        # replace it meanwhile (no heartbeats): freeze the new one too.
        classify = _worker(monitor, "classify")["pid"]
        if classify not in frozen:
            os.kill(classify, signal.SIGSTOP)
            frozen.add(classify)
        marker = _marker("hello")
        results.append((marker, clients.openai(f"say {marker}", check=False, timeout=60)))
        # A client can be faster than capture making it holdable (a loaded machine):
        # then it is not held, and the next one is tried. Capture's count tells (its
        # ENFORCEMENT event goes through the frozen classify and may be lost with it).
        return poll_for(lambda: _worker(monitor, "capture").get(late, 0) >= 1, 3)

    try:
        wait_for(a_late_hold, 120, f"a held write given the fail mode ({late})", interval=0.1)
        for marker, result in results:
            if fail_closed and result.returncode == -signal.SIGKILL:
                assert marker.encode() not in tls_server.received()
            else:  # not held, or resumed at the deadline (fail open)
                assert result.returncode == 0, result.stderr[-1500:]
                assert marker.encode() in tls_server.received()
        if fail_closed:
            assert any(r.returncode == -signal.SIGKILL for _, r in results), results
    except BaseException:
        monitor.stop()
        raise
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    stop_checked(monitor)


def poll_for(condition, timeout: float) -> bool:
    """Whether ``condition`` became true within ``timeout`` seconds (no failure if not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
