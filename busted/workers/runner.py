"""The body of every worker process: its entry point, which picks the role's loop from
a table (``LOOPS``), and the loop of the stages (``StageLoop``). What every role
shares (supervisor link, counters, parent death, privilege drop) is in
:mod:`busted.workers.runtime`.

Sockets (paths from :class:`busted.config.Endpoints`):

- stages bind ``pipe/<role>.sock`` (PULL) and connect a PUSH to the next stage's socket;
  the output stage binds ``events.sock`` (PUB) instead of pushing on;
- capture binds ``pipe/feedback.sock`` (PULL) for verdicts sent back by stages, which
  connect a PUSH to it;
- every worker connects a DEALER (identity = its role) to the supervisor's
  ``pipe/supervisor.sock``: hello, heartbeats with counters every 0.5 s, a final "bye",
  or "fatal" with a message when its set-up fails; it receives "stop" there.

The downstream side binds, so a restarted stage comes back at the same address and its
upstream reconnects by itself. Workers that parse untrusted payloads switch to the
unprivileged ``busted`` account once their sockets are set up.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import signal
import sys
import time
from typing import Any

import zmq

from busted import ipc, messages, schema
from busted.config import MonitorConfig
from busted.errors import BustedError
from busted.proctitle import set_process_name
from busted.rundir import RuntimeDir
from busted.workers import ROLES
from busted.workers.answers import AnswerSender, answers_path
from busted.workers.latency import short_slice
from busted.workers.runtime import (
    Counters,
    StopWorker,
    SupervisorLink,
    die_with_parent,
    drop_privileges,
    quiet_garbage_collector,
    raise_stop,
    worker_parent,
)
from busted.workers.stage import Stage

log = logging.getLogger("busted.worker")

TICK_INTERVAL_S = 0.1
DRAIN_IDLE_S = 0.1  # a stopping stage exits once its input was quiet this long
FRAMES_PER_WAKEUP = 256  # bound the work between two looks at the control socket
HOLD_PATH_ROLES = ("capture", "classify")  # what a held write waits on (--enforce)


def _capture_loop(ctx: zmq.Context, config: MonitorConfig, link: SupervisorLink,
                  role: str, parent_pid: int, seq_start: int) -> Any:
    # Imported here: the stages never load what capture needs (bcc, enforcement).
    from busted.workers.capture_worker import CaptureLoop

    return CaptureLoop(ctx, config, link, seq_start)


def _stage_loop(ctx: zmq.Context, config: MonitorConfig, link: SupervisorLink,
                role: str, parent_pid: int, seq_start: int) -> Any:
    return StageLoop(ctx, config, link, role, parent_pid)


# The loop that runs each role: capture drives a source, every other role a Stage.
LOOPS = {role: _stage_loop for role in ROLES} | {"capture": _capture_loop}


def worker_main(role: str, config: MonitorConfig, supervisor_pid: int,
                seq_start: int = 0) -> None:
    """Entry point of a worker process (forked by the supervisor's fork server)."""
    set_process_name(role)  # `busted: capture` in ps, not python3 -c from multiprocessing...
    parent_pid = worker_parent(supervisor_pid)
    if parent_pid is None:  # the supervisor and its fork server are gone already
        sys.exit(0)
    die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group; only the supervisor decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, raise_stop)
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("BUSTED_DEBUG") else logging.INFO,
        format=f"%(asctime)s %(levelname)-5s {role}[%(process)d]: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if config.enforce and role in HOLD_PATH_ROLES:
        short_slice()  # before ZeroMQ's I/O threads start: they inherit it
    ctx = zmq.Context()
    link = SupervisorLink(ctx, role, config)
    try:
        loop = LOOPS[role](ctx, config, link, role, parent_pid, seq_start)
        quiet_garbage_collector()
        loop.run()
    except BustedError as exc:
        log.error("%s", exc)
        link.send(messages.fatal(str(exc)))
        link.close()
        ctx.destroy(linger=500)
        sys.exit(3)
    except StopWorker:
        pass
    link.close()
    ctx.destroy(linger=1000)


def load_stage(role: str, config: MonitorConfig) -> Stage:
    module = importlib.import_module(f"busted.workers.{role}_worker")
    return module.STAGE(config)


class StageLoop:
    """Pull batches, run the role's stage on them, push the results on."""

    def __init__(self, ctx: zmq.Context, config: MonitorConfig, link: SupervisorLink,
                 role: str, parent_pid: int) -> None:
        self.role = role
        self.parent_pid = parent_pid
        self.config = config
        self.link = link
        self.counters = Counters()
        self.stage = load_stage(role, config)
        rundir = RuntimeDir(config.runtime_dir)
        ep = rundir.endpoints

        self.input = ipc.make_socket(ctx, zmq.PULL)
        rundir.bind(self.input, ep.stage_input(role), "pipe")
        if role == "output":
            pub = ipc.make_socket(ctx, zmq.PUB, linger_ms=0)
            rundir.bind(pub, ep.events, "stream")
            self.out: Any = ipc.PubSender(pub)
        else:
            push = ipc.make_socket(ctx, zmq.PUSH)
            push.connect(ep.stage_input(ROLES[ROLES.index(role) + 1]))
            self.out = ipc.BatchSender(push, wait_ms=config.send_timeout_ms)
        # Verdicts for held writes travel here: room for a burst of them.
        self.feedback_sock = ipc.make_socket(ctx, zmq.PUSH, hwm=10000, linger_ms=0)
        self.feedback_sock.connect(ep.feedback)
        # Under --enforce feedback goes as datagrams first: a held writer waits for it.
        self.answers = AnswerSender(answers_path(ep)) if config.enforce else None
        self.stage.feedback = self._send_feedback
        self.stage.setup()
        if drop_privileges(role, config, rundir.accounts):
            # The kernel forgets the parent-death signal when credentials change.
            die_with_parent(self.parent_pid)
            log.debug("now running as uid %d", os.getuid())

    def _send_feedback(self, command: dict[str, Any]) -> None:
        frame = ipc.pack(command)
        if self.answers is not None and self.answers.send(frame):
            return
        try:
            self.feedback_sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.counters.error("feedback_dropped", "capture is not reading feedback")

    # --- the loop ------------------------------------------------------------------
    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.input, zmq.POLLIN)
        poller.register(self.link.sock, zmq.POLLIN)
        self.link.heartbeat(time.monotonic(), self._report(), kind=messages.HELLO)
        next_tick = time.monotonic() + TICK_INTERVAL_S
        stopping = False
        last_input = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                waits = [next_tick - now, self.link.heartbeat_due(now)]
                if (due := self.out.due_in()) is not None:
                    waits.append(due)
                if stopping:
                    waits.append(DRAIN_IDLE_S)
                # Round up: a 0.7 ms wait truncated to poll(0) would spin until it passed.
                ready = dict(poller.poll(max(0, math.ceil(min(waits) * 1000))))
                if self.input in ready:
                    self._drain_input()
                    last_input = time.monotonic()
                if self.link.sock in ready:
                    for command in self.link.commands():
                        stopping |= self._command(command)
                now = time.monotonic()
                if now >= next_tick:
                    self._forward(self._guarded(self.stage.tick, now))
                    next_tick = now + TICK_INTERVAL_S
                self.out.flush_if_due()
                if now >= self.link.next_heartbeat:
                    self.link.heartbeat(now, self._report())
                if stopping and now - last_input >= DRAIN_IDLE_S:
                    break
        finally:
            self._finish()

    def _command(self, command: dict[str, Any]) -> bool:
        kind = command.get("type")
        if kind == messages.STOP:
            return True
        if kind == messages.STATS and isinstance(self.out, ipc.PubSender):
            self.out.publish_stats(command.get("stats", {}))
        return False

    def _drain_input(self) -> None:
        """Handle what is queued, then send the results on at once: the input arrived
        batched already, so waiting for the flush timer here would only add latency."""
        try:
            self._drain_frames()
        finally:
            self.out.flush()

    def _drain_frames(self) -> None:
        link = self.link
        for _ in range(FRAMES_PER_WAKEUP):
            try:
                frame = self.input.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(frame.bytes)
            # A backlog of slow batches (large bodies to classify) must not look like a
            # hang to the supervisor: heartbeat between frames when one is due.
            now = time.monotonic()
            if now >= link.next_heartbeat:
                link.heartbeat(now, self._report())

    def _handle(self, frame: bytes) -> None:
        stage = self.stage
        if stage.passthrough or not stage.wants(frame):
            try:
                count = schema.batch_length(frame)
            except schema.DecodeError as exc:
                self.counters.error("decode", str(exc))
                return
            self.counters.received += count
            self.out.send_frame(frame, count)
            return
        try:
            events = schema.decode_batch(frame)
        except schema.DecodeError as exc:
            self.counters.error("decode", str(exc))
            return
        self.counters.received += len(events)
        if stage.read_only:
            self._guarded(stage.process, events)
            self.out.send_frame(frame, len(events))
            return
        self._forward(self._process(events))

    def _process(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            return self.stage.process(events)
        except Exception:
            # Find the bad event(s): one at a time, forwarding the failures unchanged.
            out: list[dict[str, Any]] = []
            for event in events:
                try:
                    out.extend(self.stage.process([event]))
                except Exception as exc:  # noqa: BLE001 - counted by kind, never fatal
                    self.counters.error(type(exc).__name__, f"{exc!r} on seq {event.get('seq')}")
                    out.append(event)
            return out

    def _guarded(self, fn, *args) -> list[dict[str, Any]]:
        try:
            return fn(*args) or []
        except Exception as exc:  # noqa: BLE001
            self.counters.error(type(exc).__name__, f"{fn.__name__}: {exc!r}")
            return []

    def _forward(self, events: list[dict[str, Any]]) -> None:
        if events:
            self.out.add(events)

    def _report(self) -> dict[str, Any]:
        return self.counters.report(self.out.sent, self.out.dropped, self.stage.stats)

    def _finish(self) -> None:
        self._forward(self._guarded(self.stage.close))
        self.out.flush()
        self.link.heartbeat(time.monotonic(), self._report(), kind=messages.BYE)
        self.input.close(linger=0)
        self.feedback_sock.close(linger=0)
        if self.answers is not None:
            self.answers.close()
