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

import pytest
from polling import wait_for

from busted import control_client
from busted.proctitle import comm_name

from .harness.monitor import MonitorProcess, start_enforcing, stop_checked
from .test_enforcement import BERKO_RULE, _enforcement, _marker

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
    monitor = start_enforcing(BERKO_RULE)
    try:
        allowed = _marker("hello")
        result = clients.openai(f"say {allowed}", check=False, timeout=60)
        assert result.returncode == 0, result.stderr[-1500:]
        denied = _marker("berko")
        killed = clients.openai(f"tell {denied} a joke", check=False, timeout=60)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-1500:]
        assert denied.encode() not in tls_server.received()
        event = _enforcement(monitor, killed.pid, "killed")
        assert event.get("policy") == "deny"

        def judged_in_classify():
            return _worker(monitor, "classify").get("held_judged", 0) >= 2

        wait_for(judged_in_classify, 20, "classify's count of held writes it judged")
        requests = [e for e in monitor.events.snapshot() if e.get("pid") == result.pid
                    and e.get("content_class") == "LLM_REQUEST"]
        assert requests and all(e.get("policy") == "allow" and "answered" not in e
                                and e.get("identity_id") for e in requests), requests
    except BaseException:
        monitor.stop()
        raise
    stop_checked(monitor)


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_a_held_write_classify_never_answers_gets_the_fail_mode_at_the_deadline(
        tls_server, clients, fail_closed):
    extra = ("--hold-deadline-ms", str(DEADLINE_MS)) + (("--fail-closed",) if fail_closed else ())
    monitor = start_enforcing(BERKO_RULE, extra_args=extra)
    classify = 0
    try:
        classify = _worker(monitor, "classify")["pid"]
        os.kill(classify, signal.SIGSTOP)  # as good as a crash: no answer will come
        marker = _marker("hello")
        result = clients.openai(f"say {marker}", check=False, timeout=60)
        if fail_closed:
            assert result.returncode == -signal.SIGKILL, result.stderr[-1500:]
            assert marker.encode() not in tls_server.received()
        else:
            assert result.returncode == 0, result.stderr[-1500:]
            assert marker.encode() in tls_server.received()
        # Capture's count (its ENFORCEMENT event goes through the frozen classify, which
        # the supervisor may replace meanwhile, losing what was queued for it).
        late = "enforce_late_killed" if fail_closed else "enforce_late_released"
        wait_for(lambda: _worker(monitor, "capture").get(late, 0) >= 1, 20, f"capture's {late}")
    except BaseException:
        monitor.stop()
        raise
    finally:
        if classify:  # the supervisor may have replaced it meanwhile (no heartbeats)
            try:
                os.kill(classify, signal.SIGCONT)
            except ProcessLookupError:
                pass
    stop_checked(monitor)
