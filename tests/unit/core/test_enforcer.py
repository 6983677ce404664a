"""The capture worker's enforcer with real processes (sleep) as the held writers.

The kernel parts are fakes (a blocker that records its map, a source that records what
its hold hooks are asked); the signals are real: a held process is really stopped here
(as the uprobe would do) and the enforcer must resume or kill it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from polling import wait_for

from busted.config import MonitorConfig
from busted.enforce.connect_blocker import ConnectBlocker
from busted.enforce.destinations import DestinationError, parse
from busted.enforce.enforcer import Enforcer
from busted.enforce.hooks import Blocker, HoldHooks, HoldWatchdog
from busted.enforce.watchdog import Watchdog
from busted.kernel.procstat import is_stopped
from busted.sources.kernel import KernelSource


class FakeSource:
    """The kernel source's hold side: records what the enforcer asked of the kernel."""

    def __init__(self) -> None:
        self.kill_on_write_pids: list[int] = []
        self.holding: list[bool] = []
        self.unheld: list[int] = []
        self.stopped: dict[int, int] = {}  # what the kernel's held_pids map would hold

    def kill_on_write(self, pid: int) -> None:
        self.kill_on_write_pids.append(pid)

    def set_holding(self, on: bool) -> None:
        self.holding.append(on)

    def held_pids(self) -> dict[int, int]:
        return dict(self.stopped)

    def unhold(self, pid: int) -> None:
        self.unheld.append(pid)
        self.stopped.pop(pid, None)

    def held_map_fd(self) -> int:
        return -1

    def switch_map_fd(self) -> int:
        return -1


class FakeBlocker:
    def __init__(self) -> None:
        self.blocked: set[tuple[str, int]] = set()
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def block(self, ip: str, port: int = 0) -> None:
        self.blocked.add((ip, port))

    def unblock(self, ip: str, port: int = 0) -> None:
        self.blocked.discard((ip, port))

    def poll(self, timeout_s: float = 0.0) -> list[dict]:
        return []

    def close(self) -> None:
        self.closed = True


class FakeWatchdog:
    def __init__(self) -> None:
        self.lines: list[tuple] = []

    def hold(self, pid: int, deadline: float) -> None:
        self.lines.append(("hold", pid))

    def done(self, pid: int) -> None:
        self.lines.append(("done", pid))

    def flush(self) -> None:
        self.lines.append(("flush",))

    def close(self) -> None:
        self.lines.append(("close",))


def _methods(protocol: type) -> set[str]:
    return {name for name, value in vars(protocol).items()
            if callable(value) and not name.startswith("_")}


@pytest.mark.parametrize("protocol, fake, real", [
    (HoldHooks, FakeSource, KernelSource),
    (Blocker, FakeBlocker, ConnectBlocker),
    (HoldWatchdog, FakeWatchdog, Watchdog),
])
def test_the_fakes_and_the_real_parts_offer_the_whole_interface(protocol, fake, real):
    """The enforcer is given these as typed interfaces: a method missing from a fake
    would leave the enforcer untested on it, one missing from a real part would fail
    only as root."""
    methods = _methods(protocol)
    assert methods
    for cls in (fake, real):
        assert not {m for m in methods if not callable(getattr(cls, m, None))}, cls
    assert isinstance(fake(), protocol)


def _sleeper() -> subprocess.Popen:
    """A `sleep` process, once it runs sleep (the enforcer checks the program name)."""
    proc = subprocess.Popen(["sleep", "60"])

    def execed() -> bool:
        with open(f"/proc/{proc.pid}/comm") as f:
            return f.read().strip() == "sleep"

    wait_for(execed, 5, "sleep to start")
    return proc


@pytest.fixture
def writer():
    """A process playing the held writer, stopped as the uprobe would stop it."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    os.kill(proc.pid, signal.SIGSTOP)
    wait_for(lambda: is_stopped(proc.pid), 5, "the writer to stop")
    yield proc
    proc.kill()
    proc.wait()


def _enforcer(tmp_path, **config) -> tuple[Enforcer, FakeSource, FakeBlocker, FakeWatchdog]:
    source, blocker, watchdog = FakeSource(), FakeBlocker(), FakeWatchdog()
    cfg = MonitorConfig(enforce=True, **config)
    enforcer = Enforcer(cfg, source, blocker=blocker, watchdog=watchdog)
    enforcer.lock_path = str(tmp_path / "enforce.lock")
    enforcer.start()
    return enforcer, source, blocker, watchdog


def _held(pid: int, seq: int) -> dict:
    return {"event_type": "TLS_DATA_WRITE", "pid": pid, "seq": seq, "held": True,
            "timestamp": time.time(), "process_name": "sleep", "sni": "api.openai.com"}


def test_release_resumes_the_writer_and_records_the_latency(tmp_path, writer):
    enforcer, _, _, watchdog = _enforcer(tmp_path)
    event = _held(writer.pid, 7)
    enforcer.track([event])
    assert event["hold_id"] == 7
    assert ("hold", writer.pid) in watchdog.lines
    enforcer.feedback({"cmd": "release", "hold_id": 7, "pid": writer.pid})
    wait_for(lambda: not is_stopped(writer.pid), 5, "the writer to resume")
    report = enforcer.report()
    assert report["released"] == 1 and report["held_now"] == 0 and report["hold_ms_p99"] > 0
    assert ("done", writer.pid) in watchdog.lines
    assert enforcer.tick(time.monotonic()) == []  # an allowed write is not an action
    enforcer.close()


def test_a_process_waits_for_its_last_held_write(tmp_path, writer):
    enforcer, *_ = _enforcer(tmp_path)
    enforcer.track([_held(writer.pid, 1), _held(writer.pid, 2)])  # two threads
    enforcer.feedback({"cmd": "release", "hold_id": 1})
    time.sleep(0.05)
    assert is_stopped(writer.pid)
    enforcer.feedback({"cmd": "release", "hold_id": 2})
    wait_for(lambda: not is_stopped(writer.pid), 5, "the writer to resume")
    enforcer.close()


def test_kill_ends_a_held_writer_with_one_event(tmp_path, writer):
    enforcer, *_ = _enforcer(tmp_path)
    enforcer.track([_held(writer.pid, 3)])
    enforcer.feedback({"cmd": "kill", "hold_id": 3, "pid": writer.pid, "seq": 3,
                       "llm_provider": "OpenAI", "policy_reasons": ["no berko"]})
    assert writer.wait(5) == -signal.SIGKILL
    [event] = enforcer.tick(time.monotonic())
    assert event["event_type"] == "ENFORCEMENT" and event["action"] == "killed"
    assert event["policy"] == "deny" and event["llm_provider"] == "OpenAI"
    assert event["policy_reasons"] == ["no berko"] and event["hold_ms"] > 0
    assert event["process_name"] == "sleep"  # from the held write
    enforcer.close()


@pytest.mark.parametrize("fail_closed", [False, True])
def test_a_missed_deadline_applies_the_fail_mode(tmp_path, writer, fail_closed):
    enforcer, *_ = _enforcer(tmp_path, hold_deadline_ms=50, fail_closed=fail_closed)
    enforcer.track([_held(writer.pid, 4)])
    assert 0 < enforcer.due_in(time.monotonic()) <= 0.05
    assert enforcer.tick(time.monotonic()) == []
    time.sleep(0.06)
    [event] = enforcer.tick(time.monotonic())
    assert "no verdict within 50 ms" in event["policy_error"]
    if fail_closed:
        assert event["action"] == "killed-late"
        assert writer.wait(5) == -signal.SIGKILL
    else:
        assert event["action"] == "released-late"
        wait_for(lambda: not is_stopped(writer.pid), 5, "the writer to resume")
    enforcer.feedback({"cmd": "release", "hold_id": 4})  # the late verdict is ignored
    assert enforcer.report()["unknown_holds"] == 1
    enforcer.close()


def test_close_releases_everything_still_held(tmp_path, writer):
    enforcer, _, blocker, watchdog = _enforcer(tmp_path)
    enforcer.track([_held(writer.pid, 5)])
    [event] = enforcer.close()
    assert event["action"] == "released-at-exit"
    wait_for(lambda: not is_stopped(writer.pid), 5, "the writer to resume")
    assert blocker.closed and watchdog.lines[-1] == ("close",)


def test_a_deny_that_was_not_held_kills_after_the_fact(tmp_path):
    enforcer, source, *_ = _enforcer(tmp_path)
    proc = _sleeper()
    try:
        enforcer.feedback({"cmd": "kill", "hold_id": 0, "pid": proc.pid, "process_name": "sleep"})
        assert proc.wait(5) == -signal.SIGKILL
        assert source.kill_on_write_pids == [proc.pid]
        [event] = enforcer.tick(time.monotonic())
        assert event["action"] == "killed-after-send" and event["hold_ms"] == 0
    finally:
        proc.kill()


def test_a_reused_pid_is_not_killed(tmp_path):
    enforcer, source, *_ = _enforcer(tmp_path)
    proc = _sleeper()
    try:
        # The event named another program: the pid now belongs to something else.
        enforcer.feedback({"cmd": "kill", "pid": proc.pid, "process_name": "python3"})
        assert proc.poll() is None and source.kill_on_write_pids == []
        [event] = enforcer.tick(time.monotonic())
        assert event["action"] == "not-killed-gone"
    finally:
        proc.kill()


def test_dry_run_kills_nothing(tmp_path):
    enforcer, source, *_ = _enforcer(tmp_path, dry_run=True)
    proc = _sleeper()
    try:
        enforcer.feedback({"cmd": "kill", "pid": proc.pid, "process_name": "sleep"})
        time.sleep(0.05)
        assert proc.poll() is None and source.kill_on_write_pids == []
        [event] = enforcer.tick(time.monotonic())
        assert event["action"] == "would-kill"
    finally:
        proc.kill()


def test_busted_itself_is_never_signalled(tmp_path):
    enforcer, *_ = _enforcer(tmp_path)
    enforcer.feedback({"cmd": "kill", "pid": os.getpid(), "process_name": "python"})
    event = _held(os.getpid(), 9)
    enforcer.track([event])
    assert not event["held"] and enforcer.report()["holds"] == 0


def test_block_list_names_and_dns_answers(tmp_path):
    enforcer, _, blocker, _ = _enforcer(tmp_path)
    enforcer.feedback({"cmd": "block", "destinations": [
        {"text": "203.0.113.7"},
        {"text": "api.deepseek.com:443", "addrs": ["198.51.100.1"]},
        {"text": "not a host"},  # logged and ignored
    ]})
    assert blocker.blocked == {("203.0.113.7", 0), ("198.51.100.1", 443)}
    enforcer.track([{"event_type": "DNS_ANSWER", "dns_name": "API.DeepSeek.com.",
                     "dns_addrs": ["198.51.100.2", "2001:db8::2"], "seq": 1}])
    assert ("198.51.100.2", 443) in blocker.blocked and ("2001:db8::2", 443) in blocker.blocked
    enforcer.track([{"event_type": "DNS_ANSWER", "dns_name": "example.org",
                     "dns_addrs": ["192.0.2.1"], "seq": 2}])
    assert ("192.0.2.1", 0) not in blocker.blocked
    # A new list: what it no longer names is unblocked, learnt addresses included.
    enforcer.feedback({"cmd": "block", "destinations": [{"text": "203.0.113.7"}]})
    assert blocker.blocked == {("203.0.113.7", 0)}
    assert enforcer.report()["blocked_destinations"] == 1
    enforcer.close()


def test_one_enforcing_monitor_per_host(tmp_path):
    first, *_ = _enforcer(tmp_path)
    with pytest.raises(Exception, match="already enforcing on this host"):
        _enforcer(tmp_path)
    first.close()
    _enforcer(tmp_path)[0].close()  # the lock went with the first


@pytest.mark.parametrize("text, expected", [
    ("api.openai.com", ("api.openai.com", "", 0)),
    ("API.OpenAI.com:443", ("api.openai.com", "", 443)),
    ("10.1.2.3", ("", "10.1.2.3", 0)),
    ("10.1.2.3:8080", ("", "10.1.2.3", 8080)),
    ("[2001:db8::1]:443", ("", "2001:db8::1", 443)),
    ("2001:db8::1", ("", "2001:db8::1", 0)),
])
def test_destinations_parse(text, expected):
    dest = parse(text)
    assert (dest.host, dest.ip, dest.port) == expected


@pytest.mark.parametrize("text", ["", "a b", "host:0", "host:99999", "[::1", "[::1]x", "1.2.3", 7])
def test_bad_destinations_say_why(text):
    with pytest.raises(DestinationError):
        parse(text)


def test_the_watchdog_hears_of_a_hold_once_it_left_and_of_its_end_soon_after(tmp_path, writer):
    """One write to the watchdog per hold, after the held event went to classify: the
    end of a hold waits for the next hold's line, or a moment."""
    enforcer, _, _, watchdog = _enforcer(tmp_path)
    enforcer.track([_held(writer.pid, 7)])
    assert watchdog.lines[-1] == ("hold", writer.pid)  # not written yet
    enforcer.tick(time.monotonic())
    assert watchdog.lines[-1] == ("flush",)
    before = time.monotonic()
    enforcer.feedback({"cmd": "release", "hold_id": 7, "pid": writer.pid})
    enforcer.tick(before)
    assert watchdog.lines[-1] == ("done", writer.pid)
    assert enforcer.due_in(before) > 0  # the loop wakes up for it
    enforcer.tick(before + 1.0)
    assert watchdog.lines[-1] == ("flush",) and enforcer.due_in(before + 1.0) is None
    enforcer.close()
