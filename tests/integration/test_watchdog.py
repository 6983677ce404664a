"""The hold watchdog releases stopped processes when busted cannot."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil

from busted.enforce.watchdog import Watchdog

from .conftest import wait_for


def _stopped_sleeper() -> subprocess.Popen:
    proc = subprocess.Popen(["sleep", "30"])
    os.kill(proc.pid, signal.SIGSTOP)
    wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED, 5, "stopped")
    return proc


def test_held_processes_are_resumed_when_the_capture_side_dies():
    dog = Watchdog(fail_closed=False)
    proc = _stopped_sleeper()
    try:
        dog.hold(proc.pid, time.time() + 60)
        dog.flush()
        # Simulate the capture worker dying: its end of the pipe closes.
        os.close(dog._write_fd)
        dog._write_fd = -1
        wait_for(lambda: psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED, 5,
                 "the held process to run again")
        assert proc.poll() is None  # resumed, not killed
        dog.proc.wait(5)  # and the watchdog is gone
    finally:
        proc.kill()


def test_fail_closed_kills_at_the_deadline():
    dog = Watchdog(fail_closed=True)
    proc = _stopped_sleeper()
    try:
        dog.hold(proc.pid, time.time() + 0.2)
        dog.flush()
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        dog.close()


def test_a_released_process_is_left_alone():
    dog = Watchdog(fail_closed=True)
    proc = _stopped_sleeper()
    try:
        dog.hold(proc.pid, time.time() + 0.2)
        dog.done(proc.pid)
        dog.flush()
        time.sleep(0.5)  # past the deadline: nothing may happen to it now
        assert psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED
    finally:
        dog.close()
        proc.kill()
