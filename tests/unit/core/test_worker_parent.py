"""A worker arms its parent-death signal against its parent only while that parent is
the supervisor or the supervisor's fork server (runtime.worker_parent)."""

from __future__ import annotations

import os
import subprocess
import sys

from busted.workers import runtime

# Prints worker_parent(argv[1]) as seen from a process started by this one.
_CHILD = "import sys; from busted.workers.runtime import worker_parent; " \
         "print(worker_parent(int(sys.argv[1])))"


def _worker_parent_in_child(supervisor_pid: int) -> str:
    return subprocess.run([sys.executable, "-c", _CHILD, str(supervisor_pid)],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_child_of_the_supervisor_answers_its_parent():
    assert _worker_parent_in_child(os.getpid()) == str(os.getpid())


def test_a_grandchild_of_the_supervisor_answers_its_parent():
    # Here the supervisor is this process's parent, and this process the fork server.
    assert _worker_parent_in_child(os.getppid()) == str(os.getpid())


def test_a_process_the_supervisor_did_not_start_answers_none():
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a sibling: neither the child's parent nor its grandparent
        assert _worker_parent_in_child(stranger.pid) == "None"
    finally:
        stranger.kill()
        stranger.wait()
    assert runtime.worker_parent(os.getpid()) is None  # nor is a process its own parent


def test_parent_of_reads_proc_and_a_gone_process_has_none():
    assert runtime._parent_of(os.getpid()) == os.getppid()
    assert runtime._parent_of(2**22 + 1) is None  # above pid_max: never a process
