"""The root supervisor behind ``busted monitor``.

It prepares the runtime directory, starts one process per worker role (standard
library ``multiprocessing``, forked by its fork server: :func:`worker_context`),
watches them, restarts a dead or silent one with exponential backoff, relays counters
to the published stream, answers
``busted status`` / ``busted stop``, and shuts everything down in pipeline order so
nothing in flight is lost.

This module is the workers' lifecycle; its socket (``control.sock`` for the CLI and
``pipe/supervisor.sock`` for the workers) is :mod:`busted.control_server`, and the
messages on it are in :mod:`busted.messages`. Client commands are dispatched from a
table (``commands``), worker messages by their ``type`` (``_WORKER_MESSAGES``). SIGINT
and SIGTERM are turned into the same "stop" command a client sends.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from busted import control_server, messages
from busted.config import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    BACKOFF_RESET_AFTER_S,
    STOP_TIMEOUT_S,
    MonitorConfig,
)
from busted.rundir import RuntimeDir
from busted.states import State, check_transition
from busted.workers import ROLES
from busted.workers.runner import worker_main

log = logging.getLogger("busted.supervisor")

STATS_INTERVAL_S = 1.0
CAPTURE_START_GRACE_S = 10.0  # start capture anyway if a stage is slow to come up
START_TIMEOUT_S = {"capture": 180.0, "other": 30.0}  # spawn to hello
COUNTER_KEYS = ("received", "sent", "dropped", "errors")
FORK_SERVER_PRELOAD = ["busted.workers.preload"]


def worker_context() -> multiprocessing.context.BaseContext:
    """How workers are started: forked by multiprocessing's fork server, a fresh Python
    process (not a fork of the supervisor, whose zmq threads make forking it unsafe) that
    imports what every worker needs once (:mod:`busted.workers.preload`) and forks a
    copy of itself per worker. The workers share those pages instead of each importing
    its own copy: ~30 MB less for the whole daemon than the spawn start method (fresh
    interpreter per worker). See bench/README.md, "Memory".

    The fork server is a child of the supervisor and the workers are its children: it
    exits when the supervisor does (multiprocessing closes its "alive" pipe), and the
    workers follow it (parent-death signal, :func:`busted.workers.runtime.worker_parent`).
    It starts with the first worker, in the supervisor's environment, and is started
    again by multiprocessing if it ever dies (its workers then die and are restarted)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORK_SERVER_PRELOAD)
    return ctx



def _temp_dir_or(fallback: Path) -> None:
    """The fork server listens on a socket in a temporary directory. Where none is
    writable (systemd's ProtectSystem=strict without PrivateTmp), use the runtime
    directory (root's, 0750, removed at exit) instead of failing to start any worker."""
    try:
        tempfile.gettempdir()
    except FileNotFoundError:
        tempfile.tempdir = str(fallback)


@dataclass
class Worker:
    """The supervisor's view of one worker role across its incarnations."""

    role: str
    state: State = State.STOPPED
    process: multiprocessing.process.BaseProcess | None = None
    restarts: int = 0
    started_at: float = 0.0
    last_seen: float = 0.0
    backoff_s: float = BACKOFF_INITIAL_S
    next_start_at: float = 0.0
    last_exit: str = ""
    report: dict[str, Any] = field(default_factory=dict)  # latest heartbeat of this incarnation
    base: Counter = field(default_factory=Counter)  # counters of previous incarnations
    next_seq: int = 0  # capture only: where a restarted capture continues numbering
    # Sent its final counters while stopping: everything it had is downstream, so the
    # next stage may stop even though this process is still exiting (capture's kernel
    # probes take seconds to detach).
    drained: bool = False
    killed: bool = False  # sent SIGKILL while stopping (said once, not at every turn)
    last_gauges: dict[str, float] = field(default_factory=dict)

    def to(self, new: State) -> None:
        self.state = check_transition(self.state, new)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def counters(self) -> dict[str, Any]:
        """Counts are cumulative over all incarnations; gauges (floats, such as a
        latency percentile) are the current incarnation's."""
        out = Counter(self.base)
        for key in COUNTER_KEYS:
            out[key] += int(self.report.get(key, 0))
        gauges = dict(self.last_gauges)  # a stopped incarnation's, until a new one reports
        for key, value in (self.report.get("extra") or {}).items():
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                out[key] += value
            elif isinstance(value, float | dict):  # dict: structured state (output's sinks)
                gauges[key] = value
        return {**out, **gauges}

    def retire_report(self) -> None:
        """Fold this incarnation's last counters into the base before a restart."""
        current = self.counters()
        self.base = Counter({k: v for k, v in current.items() if isinstance(v, int)})
        self.last_gauges = {k: v for k, v in current.items() if isinstance(v, float | dict)}
        self.report = {}


class Supervisor:
    def __init__(self, config: MonitorConfig, *, ctx: zmq.Context | None = None,
                 clock=time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.ctx = ctx or zmq.Context()
        self.rundir = RuntimeDir(config.runtime_dir)
        self.workers = {role: Worker(role) for role in ROLES}
        _temp_dir_or(config.runtime_dir)
        self.mp = worker_context()
        self.started_at = 0.0
        self.stopping = False
        self.stop_started = 0.0
        self.exit_status = 0
        self.fatal_error = ""
        self.control: control_server.ControlSocket | None = None
        # One handler per client command (`busted status`, `busted stop`).
        self.commands = {"status": self._cmd_status, "stop": self._cmd_stop}
        self._next_stats = 0.0

    # --- start ---------------------------------------------------------------------
    def start(self) -> None:
        self.rundir.prepare()
        accounts = self.rundir.accounts
        if self.config.drop_privileges and os.geteuid() == 0 and \
                not accounts.worker_can_reach(self.rundir.endpoints.pipe):
            log.warning("the 'busted' account cannot reach %s (a parent directory is closed "
                        "to it, or the account is missing); payload-parsing workers will keep "
                        "running as root", self.rundir.endpoints.pipe)
            self.config = self.config.replace(drop_privileges=False)
        self.control = control_server.ControlSocket(
            self.ctx, self.rundir, self._on_worker_message, self.commands)
        self.started_at = self.clock()
        # Downstream first; capture only once the others are up (see _start_capture_when_ready),
        # so the first events do not wait in queues for stages that are still importing.
        for role in reversed(ROLES[1:]):
            self._spawn(self.workers[role])

    def _start_capture_when_ready(self, now: float) -> None:
        capture = self.workers["capture"]
        if capture.state != State.STOPPED or capture.process is not None or self.stopping:
            return
        others_up = all(w.state == State.RUNNING for r, w in self.workers.items() if r != "capture")
        if others_up or now - self.started_at > CAPTURE_START_GRACE_S:
            self._spawn(capture)

    def _spawn(self, worker: Worker) -> None:
        # A restarted capture continues the numbering, so gaps stay meaningful downstream.
        seq_start = worker.next_seq if worker.role == "capture" else 0
        process = self.mp.Process(
            target=worker_main,
            args=(worker.role, self.config, os.getpid(), seq_start),
            name=f"busted-{worker.role}",
        )
        process.start()
        worker.process = process
        worker.to(State.STARTING)
        worker.drained = False
        worker.killed = False
        worker.started_at = worker.last_seen = self.clock()
        log.debug("started %s (pid %d)", worker.role, process.pid)

    # --- main loop -----------------------------------------------------------------
    def run(self) -> int:
        """Supervise until stopped; returns the exit status."""
        self._install_signal_handlers()
        try:
            while not self._all_stopped():
                self._step()
        finally:
            self._kill_all()
            self.control.close()
            self.rundir.release()
        return self.exit_status

    def _step(self) -> None:
        poller = zmq.Poller()
        poller.register(self.control.sock, zmq.POLLIN)
        sentinels = {}
        for worker in self.workers.values():
            if worker.process is not None:
                sentinels[worker.process.sentinel] = worker
                poller.register(worker.process.sentinel, zmq.POLLIN)
        ready = dict(poller.poll(100))
        if self.control.sock in ready:
            self.control.read()
        now = self.clock()
        for fd, worker in sentinels.items():
            if fd in ready or not worker.process.is_alive():
                self._on_exit(worker, now)
        self._start_capture_when_ready(now)
        self._check_heartbeats(now)
        self._respawn_due(now)
        if self.stopping:
            self._advance_shutdown(now)
        elif now >= self._next_stats:
            self._send_stats()
            self._next_stats = now + STATS_INTERVAL_S

    def _on_worker_message(self, role: str, message: dict[str, Any]) -> None:
        worker = self.workers.get(role)
        if worker is None or worker.process is None or message.get("pid") != worker.pid:
            return  # a message from a previous incarnation, or a stranger
        worker.last_seen = self.clock()
        handler = _WORKER_MESSAGES.get(message["type"])
        if handler is not None:
            handler(self, worker, message)
        if "next_seq" in message:
            worker.next_seq = message["next_seq"]
        if message.get("exhausted") and self.config.exit_when_done:
            self.request_stop(reason="the source has no more events")

    def _on_exit(self, worker: Worker, now: float) -> None:
        process = worker.process
        process.join(timeout=1)  # its sentinel fired: reaping it is immediate
        code = process.exitcode
        if worker.state == State.STOPPING and self.control.poll(50):
            # Its final counters ("bye") were sent before it exited but may still be in
            # flight: read them before this incarnation's report is retired.
            self.control.read()
        worker.process = None
        worker.retire_report()
        if self.stopping or worker.state == State.STOPPING:
            if worker.state in (State.STARTING, State.RUNNING):
                worker.to(State.STOPPING)  # died on its own while we were stopping anyway
            if worker.state == State.STOPPING:
                worker.to(State.STOPPED)
            return
        reason = f"exited with status {code}" if code is not None and code >= 0 \
            else f"killed by signal {-code}" if code is not None else "vanished"
        worker.last_exit = reason
        if now - worker.started_at >= BACKOFF_RESET_AFTER_S:
            worker.backoff_s = BACKOFF_INITIAL_S
        worker.next_start_at = now + worker.backoff_s
        log.warning("%s (pid %s) %s; restarting in %.1f s", worker.role, process.pid, reason,
                    worker.backoff_s)
        worker.backoff_s = min(worker.backoff_s * 2, BACKOFF_MAX_S)
        worker.to(State.BACKOFF)

    def _check_heartbeats(self, now: float) -> None:
        for worker in self.workers.values():
            if worker.process is None:
                continue
            if worker.state == State.RUNNING:
                timeout = self.config.heartbeat_timeout_s
            elif worker.state == State.STARTING:
                # Start-up imports, and for capture compiles and attaches BPF programs,
                # which takes seconds on a busy 2-core machine.
                timeout = START_TIMEOUT_S["capture" if worker.role == "capture" else "other"]
            else:
                continue
            if now - worker.last_seen > timeout:
                what = "sent no heartbeat" if worker.state == State.RUNNING else "did not start"
                log.warning("%s (pid %d) %s for %.1f s; killing it",
                            worker.role, worker.pid, what, now - worker.last_seen)
                worker.last_seen = now  # one kill per timeout; the sentinel does the rest
                worker.process.kill()

    def _respawn_due(self, now: float) -> None:
        for worker in self.workers.values():
            if worker.state == State.BACKOFF and not self.stopping and now >= worker.next_start_at:
                worker.restarts += 1
                self._spawn(worker)

    # --- worker messages ---------------------------------------------------------------
    def _on_report(self, worker: Worker, message: dict[str, Any]) -> None:
        """hello, heartbeat and bye carry the worker's counters."""
        worker.report = message
        kind = message["type"]
        if kind == messages.BYE and worker.state == State.STOPPING:
            worker.drained = True
        if kind == messages.HELLO and worker.state == State.STARTING:
            worker.to(State.RUNNING)
            log.debug("%s is running (pid %d)", worker.role, worker.pid)

    def _on_fatal(self, worker: Worker, message: dict[str, Any]) -> None:
        self.fatal_error = f"{worker.role}: {message.get('error', 'failed')}"
        self.exit_status = 1
        self.request_stop(reason=f"{worker.role} cannot run")

    # --- commands (client requests) ---------------------------------------------------
    def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        """Handle one control request (from a client or from a signal)."""
        return control_server.dispatch(self.commands, request)

    def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    def _cmd_stop(self, args: dict[str, Any]) -> dict[str, Any]:
        self.request_stop(reason="stop requested")
        return {"stopping": True}

    def request_stop(self, reason: str) -> None:
        if self.stopping:
            return
        log.info("stopping: %s", reason)
        self.stopping = True
        self.stop_started = self.clock()

    def _install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: Any) -> None:
            self.dispatch({"id": f"signal-{signum}", "command": "stop"})

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    # --- shutdown ------------------------------------------------------------------
    def _advance_shutdown(self, now: float) -> None:
        """Stop the stages one after another in pipeline order, so each one drains
        what its upstream sent before it goes. Hard deadline: STOP_TIMEOUT_S overall."""
        overall_late = now - self.stop_started > STOP_TIMEOUT_S
        for role in ROLES:
            worker = self.workers[role]
            if worker.state == State.BACKOFF:
                worker.to(State.STOPPED)
                continue
            if worker.state == State.STOPPED:
                continue
            if worker.state in (State.RUNNING, State.STARTING):
                worker.to(State.STOPPING)
                self.control.send_to(role, messages.stop())
            # Every stage keeps working while the ones before it drain, so one shared
            # deadline fits: a backlog gets all the time there is.
            if (worker.state == State.STOPPING and worker.process is not None and overall_late
                    and not worker.killed):
                worker.killed = True  # once: its exit is seen on a later turn
                if worker.drained:  # only its exit is slow (nothing is lost)
                    log.debug("%s still exiting; killing it", role)
                else:
                    log.warning("%s did not stop in time; killing it", role)
                worker.process.kill()
            if not overall_late and not worker.drained:
                return  # one stage at a time

    def _all_stopped(self) -> bool:
        return self.stopping and all(w.state == State.STOPPED for w in self.workers.values())

    def _kill_all(self) -> None:
        for worker in self.workers.values():
            if worker.process is not None and worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=2)

    def _send_stats(self) -> None:
        if self.workers["output"].state == State.RUNNING:
            self.control.send_to("output", messages.stats(self.stats()))

    # --- reporting -----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The counters published on the stream and shown by `busted status`."""
        now = self.clock()
        workers = {}
        for role, w in self.workers.items():
            workers[role] = {
                "pid": w.pid or 0,
                "state": w.state.value,
                "restarts": w.restarts,
                "uptime_s": round(now - w.started_at, 1) if w.process is not None else 0.0,
                "last_exit": w.last_exit,
                "errors_by_kind": dict(w.report.get("errors_by_kind") or {}),
                **w.counters(),
            }
        capture, output = workers["capture"], workers["output"]
        dropped = sum(w.get("dropped", 0) for role, w in workers.items() if role != "output")
        missing = output.get("missing", 0)
        # Captures that classify folded into one message event are not lost.
        merged = workers["classify"].get("merged", 0)
        kernel_lost = capture.get("lost", 0)
        return {
            "time": time.time(),
            "uptime_s": round(now - self.started_at, 1),
            "workers": workers,
            "produced": capture.get("received", 0),
            "delivered": output.get("received", 0),
            "dropped": dropped + output.get("dropped", 0),
            "merged": merged,
            "lost": kernel_lost + max(0, missing - dropped - merged),
            "kernel_lost": kernel_lost,
            # capture's table of blind programs (busted.kernel.blindspots): not a counter
            "blind": list((self.workers["capture"].report.get("extra") or {}).get("blind") or []),
        }

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "runtime_dir": str(self.config.runtime_dir),
            "source": self.config.source,
            "stopping": self.stopping,
            "fatal_error": self.fatal_error,
            **self.stats(),
        }


# What the supervisor does with each control message a worker sends (messages.py).
_WORKER_MESSAGES = {
    messages.HELLO: Supervisor._on_report,
    messages.HEARTBEAT: Supervisor._on_report,
    messages.BYE: Supervisor._on_report,
    messages.FATAL: Supervisor._on_fatal,
}
