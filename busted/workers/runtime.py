"""What every worker process shares, whatever its role: the link to the supervisor,
its counters, dying with the supervisor, and dropping root.

Role loops (:mod:`busted.workers.runner`'s ``StageLoop``, :mod:`busted.workers.capture_worker`'s
``CaptureLoop``) import this module; it imports none of them, so the worker runtime has
no import circle.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
from collections import Counter
from typing import Any

import zmq

from busted import ipc, messages
from busted.config import HEARTBEAT_INTERVAL_S, Endpoints, MonitorConfig
from busted.rundir import Accounts

log = logging.getLogger("busted.worker")

UNPRIVILEGED_ROLES = ("classify", "identity", "policy")
_PR_SET_PDEATHSIG = 1


class StopWorker(BaseException):
    """Raised by the SIGTERM handler: stop now, flushing what can be flushed.

    A BaseException, like KeyboardInterrupt: the stages' ``except Exception`` guards
    (one bad event never stops a worker) must not swallow it. When they did, a worker
    whose supervisor was killed went on forever: the parent-death signal comes once."""


def raise_stop(signum: int, frame: Any) -> None:
    raise StopWorker()


def worker_parent(supervisor_pid: int) -> int | None:
    """The process whose death must end this worker: its parent, which is the
    supervisor's fork server (or the supervisor itself, had it started the worker
    directly). None when that parent is already gone (this worker was adopted by
    another process): the worker must not start then."""
    parent = os.getppid()
    if parent == supervisor_pid or _parent_of(parent) == supervisor_pid:
        return parent
    return None


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # "PID (comm) STATE PPID ...": the name may hold spaces and parentheses.
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send us SIGTERM when our parent dies (the fork server, which dies
    with the supervisor), so no worker is orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the heartbeat timeout still applies
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


# Young objects between two collections of the youngest generation (Python's default:
# 700). Events are acyclic dicts that reference counting frees at once, so collecting
# often finds nothing, while each collection that reaches the oldest generation stalls
# the worker for milliseconds (the pipeline's p99 at 10,000 events/s: bench/README.md).
GC_YOUNG_THRESHOLD = 10_000


def quiet_garbage_collector() -> None:
    """Called once a worker is set up: what exists then (modules, the role's state)
    lives as long as the process, so the cyclic collector stops walking it (gc.freeze),
    and it runs less often. Cycles are still collected."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)


def drop_privileges(role: str, config: MonitorConfig, accounts: Accounts) -> bool:
    """Switch a payload-parsing worker to the unprivileged account (root only)."""
    if role not in UNPRIVILEGED_ROLES or not config.drop_privileges or os.geteuid() != 0:
        return False
    if accounts.worker_uid is None:
        log.warning("no 'busted' account: %s keeps running as root (run `make setup`)", role)
        return False
    os.setgroups([])
    os.setgid(accounts.worker_gid)
    os.setuid(accounts.worker_uid)
    return True


class SupervisorLink:
    """The worker's DEALER to the supervisor: hello, heartbeats, commands."""

    def __init__(self, ctx: zmq.Context, role: str, config: MonitorConfig) -> None:
        self.role = role
        self.sock = ipc.make_socket(ctx, zmq.DEALER, linger_ms=500)
        self.sock.setsockopt(zmq.IDENTITY, role.encode())
        self.sock.connect(Endpoints(config.runtime_dir).supervisor)
        self.next_heartbeat = 0.0

    def send(self, message: dict[str, Any]) -> None:
        message.setdefault("pid", os.getpid())
        try:
            self.sock.send(ipc.pack(message), zmq.NOBLOCK)
        except zmq.Again:  # supervisor gone or swamped; its timeout will notice
            pass

    def heartbeat_due(self, now: float) -> float:
        return self.next_heartbeat - now

    def heartbeat(self, now: float, report: dict[str, Any],
                  kind: str = messages.HEARTBEAT) -> None:
        self.send(messages.report(kind, report))
        self.next_heartbeat = now + HEARTBEAT_INTERVAL_S

    def commands(self) -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                frame = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                out.append(ipc.unpack(frame))
            except ValueError:
                log.warning("ignored a malformed control message")

    def close(self) -> None:
        self.sock.close()


class Counters:
    """What `busted status` shows for one worker."""

    def __init__(self) -> None:
        self.received = 0
        self.errors: Counter[str] = Counter()
        self._logged: Counter[str] = Counter()

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        # The first few of each kind are logged in full, then one line per thousand.
        n = self.errors[kind]
        if n <= 5 or n % 1000 == 0:
            log.warning("error %s (#%d): %s", kind, n, detail)

    def report(self, sent: int, dropped: int, extra: dict[str, int]) -> dict[str, Any]:
        return {
            "received": self.received,
            "sent": sent,
            "dropped": dropped,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "extra": dict(extra),
        }
