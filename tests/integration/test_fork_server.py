"""The workers are forked by the supervisor's fork server (busted.supervisor.worker_context):
they are its children, it is the supervisor's child, and losing it loses no function."""

from __future__ import annotations

import os
import signal

import psutil

from .conftest import wait_for


def _fork_server(supervisor: psutil.Process) -> psutil.Process:
    servers = [c for c in supervisor.children() if "multiprocessing.forkserver" in
               " ".join(c.cmdline())]
    assert len(servers) == 1, [c.cmdline() for c in supervisor.children()]
    return servers[0]


def test_every_worker_is_a_child_of_the_supervisors_fork_server(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "100", fmt="none")
    status = mon.wait_running()
    server = _fork_server(psutil.Process(mon.proc.pid))
    for role, worker in status["workers"].items():
        assert psutil.Process(worker["pid"]).ppid() == server.pid, role
    assert mon.stop() == 0


def test_a_killed_fork_server_takes_its_workers_along_and_all_come_back(monitor_factory):
    mon = monitor_factory("--source", "synthetic", "--rate", "200", fmt="none")
    before = mon.wait_running()
    old = {role: w["pid"] for role, w in before["workers"].items()}
    os.kill(_fork_server(psutil.Process(mon.proc.pid)).pid, signal.SIGKILL)

    def replaced():
        workers = mon.status()["workers"]
        return all(w["state"] == "running" and w["pid"] != old[role] and w["restarts"] == 1
                   for role, w in workers.items()) and workers
    wait_for(replaced, 30, "every worker to be restarted by a new fork server")
    # The new workers do their work: events still flow end to end.
    delivered = mon.status()["delivered"]
    wait_for(lambda: mon.status()["delivered"] > delivered, 20, "events to flow again")
    assert mon.stop() == 0
