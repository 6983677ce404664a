"""The supervisor and its workers as real processes on real ipc sockets."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import psutil
import zmq
from monitor_process import BUSTED

from busted import schema

from .conftest import busted_cli, wait_for


def _all_gone(pids: set[int]) -> bool:
    """No process of these pids is left (a zombie awaiting its reaper counts as gone)."""
    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    return not any(alive(p) for p in pids)


def test_every_synthetic_event_is_printed_once(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "2000", "--count", "3000",
                          "--exit-when-done")
    assert mon.wait_exit() == 0, mon.stderr_text()
    events = mon.events()
    assert [e["seq"] for e in events] == list(range(3000))
    summary = mon.summary()
    assert summary["produced"] == summary["delivered"] == 3000
    assert summary["dropped"] == summary["lost"] == 0
    assert all(w["state"] == "stopped" for w in summary["workers"].values())
    # The exit summary is printed for people too.
    assert "produced 3,000, delivered 3,000 (merged into messages 0)" in mon.stderr_text()


def test_replay_source_feeds_recorded_events(monitor_factory, short_dir: Path):
    recording = short_dir / "rec.jsonl"
    recording.write_text(
        json.dumps({"event_type": "TLS_DATA_WRITE", "pid": 42, "process_name": "python3",
                    "content_class": "LLM_REQUEST", "llm_provider": "OpenAI",
                    "llm_model": "gpt-4o", "llm_user_message": "hello"}) + "\n"
        + "this line is not JSON\n\n"
        + json.dumps({"event_type": "DNS_QUERY", "pid": 43, "dns_name": "api.openai.com"}) + "\n")
    mon = monitor_factory("--source", f"replay:{recording}")
    assert mon.wait_exit() == 0, mon.stderr_text()
    events = mon.events()
    assert [(e["pid"], e["event_type"]) for e in events] == [(42, "TLS_DATA_WRITE"),
                                                              (43, "DNS_QUERY")]
    assert events[0]["llm_user_message"] == "hello"
    assert "skipped a malformed line" in mon.stderr_text()


def test_text_format_reads_like_a_conversation_log(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "500", "--count", "200",
                          "--exit-when-done", fmt="text")
    assert mon.wait_exit() == 0, mon.stderr_text()
    text = "\n".join(mon.lines)
    assert ">>> OpenAI gpt-4o chat/completions [sdk:openai-python" in text
    assert "  user: " in text
    assert "<<< Anthropic" in text


def test_kill_classify_under_load_is_recovered_and_accounted(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "3000", fmt="none")
    status = mon.wait_running()
    classify_pid = status["workers"]["classify"]["pid"]
    capture_before = status["workers"]["capture"]["received"]
    os.kill(classify_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def classify_back():
        w = mon.status()["workers"]["classify"]
        return w if w["state"] == "running" and w["pid"] != classify_pid else None

    back = wait_for(classify_back, 10, "classify to come back")
    assert time.monotonic() - killed_at < 2.0 + 0.5  # 2 s, plus the polling step
    assert back["restarts"] == 1
    # Capture kept producing the whole time, and events flow through the new classify.
    delivered_at_restart = mon.status()["delivered"]
    wait_for(lambda: mon.status()["delivered"] > delivered_at_restart + 1000, 10,
             "events to flow again")
    assert mon.status()["workers"]["capture"]["received"] > capture_before
    assert mon.stop() == 0, mon.stderr_text()
    summary = mon.summary()
    # Every produced event is delivered, or counted as dropped, or counted as lost
    # (numbered by capture, never seen by output: it died inside the killed worker).
    assert summary["produced"] > 0
    assert summary["produced"] == (summary["delivered"] + summary["dropped"] + summary["lost"]
                                   + summary["merged"])
    assert summary["workers"]["output"].get("missing", 0) == summary["dropped"] + summary["lost"]
    assert "classify" in mon.stderr_text() and "restarting" in mon.stderr_text()


def test_a_subscriber_that_never_reads_does_not_slow_the_pipeline(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "20000", "--count", "60000",
                          "--exit-when-done", fmt="none")
    ctx = zmq.Context.instance()
    lazy = ctx.socket(zmq.SUB)
    lazy.setsockopt(zmq.RCVHWM, 10)
    lazy.setsockopt(zmq.SUBSCRIBE, b"")
    lazy.connect(f"ipc://{mon.runtime_dir}/events.sock")  # and never recv()
    try:
        assert mon.wait_exit(timeout=60) == 0, mon.stderr_text()
    finally:
        lazy.close(linger=0)
    summary = mon.summary()
    assert summary["produced"] == summary["delivered"] == 60000
    assert summary["dropped"] == 0


def test_a_malformed_message_is_counted_and_the_worker_goes_on(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "200", fmt="text")
    mon.wait_running()
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"ipc://{mon.runtime_dir}/pipe/output.sock")
    # Garbage, a batch whose event breaks the text formatter, and a good batch.
    push.send(b"\x00not msgpack at all")
    push.send(schema.encode_batch([{"event_type": "TLS_DATA_WRITE", "content_class": "LLM_REQUEST",
                                    "pid": 7, "llm_user_message": {"not": "text"}}]))
    push.send(schema.encode_batch([{"event_type": "TLS_DATA_WRITE", "content_class": "LLM_REQUEST",
                                    "pid": 8, "process_name": "after-the-bad-one",
                                    "llm_user_message": "still here"}]))
    push.close(linger=1000)
    wait_for(lambda: any("after-the-bad-one" in line for line in mon.lines), 10,
             "the event after the bad ones")
    output = wait_for(lambda: (w := mon.status()["workers"]["output"])["errors"] >= 2 and w, 5,
                      "errors to be counted")
    assert output["state"] == "running" and output["restarts"] == 0
    assert output["errors_by_kind"]["decode"] == 1
    assert output["errors_by_kind"]["AttributeError"] == 1
    assert mon.stop() == 0
    assert "error decode" in mon.stderr_text()


def test_shutdown_leaves_no_process_and_a_second_monitor_is_refused(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "100", fmt="none")
    mon.wait_running()
    children = mon.worker_pids()
    assert len(children) >= 5
    second = busted_cli("monitor", "--source", "synthetic", "--runtime-dir", str(mon.runtime_dir))
    assert second.returncode != 0
    assert "already running" in second.stderr and "Traceback" not in second.stderr
    started = time.monotonic()
    assert mon.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 5
    wait_for(lambda: _all_gone(children), 5, "workers to be gone")
    assert not (mon.runtime_dir / "control.sock").exists()


def test_busted_stop_uses_the_control_socket(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "100", fmt="none")
    mon.wait_running()
    result = busted_cli("stop", "--runtime-dir", str(mon.runtime_dir))
    assert result.returncode == 0, result.stderr
    assert mon.wait_exit(10) == 0
    assert "stopping: stop requested" in mon.stderr_text()


def test_runtime_dir_and_socket_permissions(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "100", fmt="none")
    mon.wait_running()
    root = mon.runtime_dir

    def mode(p: Path) -> int:
        return stat.S_IMODE(os.lstat(p).st_mode)

    assert mode(root) == 0o750
    # As root, pipe/ is root's; the worker account may only pass through it.
    assert mode(root / "pipe") == (0o710 if os.geteuid() == 0 else 0o700)
    assert mode(root / "control.sock") == 0o600
    assert mode(root / "events.sock") == 0o660
    for sock in (root / "pipe").glob("*.sock"):
        assert mode(sock) == 0o600, sock
    if os.geteuid() == 0:
        import grp

        busted_gid = grp.getgrnam("busted").gr_gid
        assert os.stat(root).st_gid == busted_gid
        assert os.stat(root / "events.sock").st_gid == busted_gid
        # Payload-parsing workers really run unprivileged.
        status = mon.status()
        for role in ("classify", "identity", "policy"):
            assert psutil.Process(status["workers"][role]["pid"]).uids().real != 0, role
        assert psutil.Process(status["workers"]["capture"]["pid"]).uids().real == 0
    mon.stop()


def test_status_without_a_monitor_is_a_clear_message(short_dir: Path):
    result = busted_cli("status", "--runtime-dir", str(short_dir / "nothing"))
    assert result.returncode == 1
    assert "no busted monitor is running" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flags_are_explained(short_dir: Path):
    result = busted_cli("monitor", "--source", "nonsense", "--runtime-dir", str(short_dir / "x"))
    assert result.returncode != 0 and "unknown source" in result.stderr
    assert "Traceback" not in result.stderr
    result = busted_cli("monitor", "--max-copy", "10", "--runtime-dir", str(short_dir / "x"))
    assert result.returncode == 2 and "--max-copy" in result.stderr


def test_enforce_flags_are_checked_before_anything_starts(short_dir: Path):
    rule = 'package busted\ndeny contains "x" if input.pid == 1'
    cases = [
        (("--enforce",), "--enforce needs a policy"),
        (("--enforce", "--rule", rule, "--source", "synthetic"), "--enforce acts on real processes"),
        (("--dry-run",), "--dry-run only makes sense with --enforce"),
        (("--fail-closed",), "--fail-closed only makes sense with --enforce"),
    ]
    for args, message in cases:
        result = busted_cli("monitor", *args, "--runtime-dir", str(short_dir / "x"))
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_a_hung_worker_is_killed_and_restarted(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "500", "--heartbeat-timeout", "1",
                          fmt="none")
    status = mon.wait_running()
    identity_pid = status["workers"]["identity"]["pid"]
    os.kill(identity_pid, signal.SIGSTOP)  # alive but silent
    back = wait_for(lambda: (w := mon.status()["workers"]["identity"])["state"] == "running"
                    and w["pid"] != identity_pid and w, 10, "identity to be replaced")
    assert back["restarts"] == 1
    assert _all_gone({identity_pid})
    assert mon.stop() == 0
    assert "sent no heartbeat" in mon.stderr_text()


def test_workers_die_with_a_killed_supervisor(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "100", fmt="none")
    mon.wait_running()
    children = mon.worker_pids()
    mon.proc.kill()
    mon.proc.wait(5)
    wait_for(lambda: _all_gone(children), 5, "orphaned workers to exit")
    # The next monitor cleans the stale runtime directory up and starts.
    again = monitor_factory("--source", "synthetic", "--rate", "100", fmt="none",
                            name=mon.runtime_dir.name)
    again.wait_running()
    assert again.stop() == 0


def test_enforce_without_root_says_so(short_dir: Path):
    if os.geteuid() != 0:
        result = busted_cli("monitor", "--enforce", "--rule", "package busted",
                            "--runtime-dir", str(short_dir / "x"))
    else:  # drop to nobody, as a user who forgot sudo
        result = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                                 *BUSTED, "monitor", "--enforce", "--rule", "package busted",
                                 "--runtime-dir", "/tmp/busted-nobody-x"],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--enforce needs root" in result.stderr and "sudo" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
