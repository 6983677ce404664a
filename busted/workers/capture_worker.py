"""The capture worker: drains a source (the kernel probes, or a synthetic / replay
source), numbers each event (``seq``) and hands batches to classify without ever
blocking.

Sockets: PUSH connected to ``pipe/classify.sock``; PULL bound at
``pipe/feedback.sock`` (verdicts from downstream, applied to the source); under
``--enforce`` also ``pipe/answers.sock``, the same feedback as datagrams
(:mod:`busted.workers.answers`: a held write waits for it); DEALER to the supervisor.
Runs as root when the source is the kernel (it loads eBPF).

Why never block: while capture waits, the kernel ring buffer fills and records are
lost with no way to get them back. A dead or slow classify costs a counted drop here
instead, and capture keeps draining.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import zmq

from busted import ipc, messages
from busted.config import MonitorConfig
from busted.enforce.enforcer import Enforcer
from busted.enforce.hooks import HoldHooks
from busted.errors import UsageError
from busted.kernel import memtrim
from busted.rundir import RuntimeDir
from busted.sources import EventSource, open_source
from busted.workers.answers import AnswerReceiver, answers_path
from busted.workers.runtime import Counters, SupervisorLink

log = logging.getLogger("busted.capture")

IDLE_POLL_S = 0.05  # longest wait for the source when nothing is pending


class CaptureLoop:
    def __init__(self, ctx: zmq.Context, config: MonitorConfig, link: SupervisorLink,
                 seq_start: int, source: EventSource | None = None) -> None:
        self.config = config
        self.link = link
        self.seq = seq_start
        self.counters = Counters()
        rundir = RuntimeDir(config.runtime_dir)
        ep = rundir.endpoints
        old_umask = os.umask(0o077)
        try:
            push = ipc.make_socket(ctx, zmq.PUSH)
            # Capture never waits for classify: everything beyond the queue is dropped
            # and counted.
            push.connect(ep.stage_input("classify"))
            self.out = ipc.BatchSender(push, wait_ms=0)
            self.feedback = ipc.make_socket(ctx, zmq.PULL, hwm=10000)
            rundir.bind(self.feedback, ep.feedback, "pipe")
            self.answers: AnswerReceiver | None = None
            if config.enforce:
                self.answers = _answer_receiver(rundir)
        finally:
            os.umask(old_umask)
        self.source = source or open_source(config)
        self.enforcer: Enforcer | None = None
        if config.enforce:
            self.enforcer = _make_enforcer(config, self.source)

    def run(self) -> None:
        self.source.start()
        enforcer = self.enforcer
        poller = None
        if enforcer is not None:
            enforcer.start()
            # Verdicts for held writes must be read as soon as they come, not after the
            # source's wait: wait on the feedback socket and the ring buffer together.
            fd = self.source.fileno() if hasattr(self.source, "fileno") else -1
            if fd >= 0:
                poller = zmq.Poller()
                poller.register(self.feedback, zmq.POLLIN)
                poller.register(fd, zmq.POLLIN)
                if self.answers is not None:
                    poller.register(self.answers.fileno(), zmq.POLLIN)
        # The BPF compiler is done for good: give its memory back (bench/README.md, Memory).
        memtrim.release_compiler_memory()
        log.info("capture ready: source %s", self.config.source)
        self.link.heartbeat(time.monotonic(), self._report(), kind=messages.HELLO)
        try:
            while True:
                now = time.monotonic()
                wait = min(IDLE_POLL_S, max(0.0, self.link.heartbeat_due(now)))
                if (due := self.out.due_in()) is not None:
                    # At least 1 ms: sources wait in whole milliseconds, and a wait
                    # rounded down to 0 would spin until the flush is due.
                    wait = min(wait, max(due, 0.001))
                if enforcer is not None and (due := enforcer.due_in(now)) is not None:
                    wait = min(wait, max(due, 0.001))
                if self.source.exhausted:
                    self.out.flush()
                    if self.link.sock.poll(int(wait * 1000)) and self._commands():
                        return
                else:
                    if poller is not None:
                        poller.poll(max(1, int(wait * 1000 + 0.999)))
                        wait = 0.0
                        self._apply_feedback()  # answers first: their writers are stopped
                    events = self.source.poll(wait)
                    if events:
                        self._number(events)
                        if enforcer is not None:
                            enforcer.track(events)
                        self.out.add(events)
                self._apply_feedback()
                if enforcer is not None:
                    self._send_own(enforcer.tick(time.monotonic()))
                self.out.flush_if_due()
                if self._commands():
                    return
                now = time.monotonic()
                if now >= self.link.next_heartbeat:
                    self.link.heartbeat(now, self._report())
        finally:
            if enforcer is not None:
                self._send_own(enforcer.close())
            self.out.flush()
            # "bye" first: the supervisor may stop the next stage while the kernel
            # detaches the probes (seconds with bcc).
            self.link.heartbeat(time.monotonic(), self._report(), kind=messages.BYE)
            self.source.close()
            self.feedback.close(linger=0)
            if self.answers is not None:
                self.answers.close()

    def _send_own(self, events: list[dict[str, Any]]) -> None:
        """Events capture makes itself (enforcement actions) join the stream."""
        if events:
            self._number(events)
            self.out.add(events)
            self.out.flush()

    def _number(self, events: list[dict[str, Any]]) -> None:
        seq = self.seq
        for event in events:
            event["seq"] = seq
            seq += 1
        self.counters.received += seq - self.seq
        self.seq = seq

    def _commands(self) -> bool:
        return any(c.get("type") == messages.STOP for c in self.link.commands())

    def _apply_feedback(self) -> None:
        if self.answers is not None:
            for frame in self.answers.receive():
                self._apply(frame)
        for _ in range(1000):
            try:
                frame = self.feedback.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._apply(frame)

    def _apply(self, frame: bytes) -> None:
        try:
            command = ipc.unpack(frame)
            if self.enforcer is not None and command.get("cmd") in messages.ENFORCER_COMMANDS:
                self.enforcer.feedback(command)
            else:
                self.source.feedback(command)
        except Exception as exc:  # noqa: BLE001 - a bad verdict never stops capture
            self.counters.error(type(exc).__name__, f"feedback: {exc!r}")

    def _report(self) -> dict[str, Any]:
        extra = dict(self.source.stats())
        if self.enforcer is not None:
            extra.update({f"enforce_{k}": v for k, v in self.enforcer.report().items()})
        if self.answers is not None and self.answers.refused:
            extra["answers_refused"] = self.answers.refused
        report = self.counters.report(self.out.sent, self.out.dropped, extra)
        report["next_seq"] = self.seq
        report["exhausted"] = bool(self.source.exhausted)
        return report


def _answer_receiver(rundir: RuntimeDir) -> AnswerReceiver:
    """``pipe/answers.sock``, open to us and the worker account, like the pipe's sockets."""
    me = os.geteuid()
    worker = rundir.accounts.worker_uid if me == 0 else None
    return AnswerReceiver(answers_path(rundir.endpoints),
                          (me,) if worker is None else (me, worker),
                          -1 if worker is None else worker)


def _make_enforcer(config: MonitorConfig, source: EventSource) -> Enforcer:
    """The enforcer with its kernel parts: the connect blocker (report-only in a dry
    run) and, when writes are held, the watchdog that outlives this worker."""
    from busted.enforce.connect_blocker import ConnectBlocker
    from busted.enforce.watchdog import Watchdog
    from busted.sources.kernel import holds_writes

    if not isinstance(source, HoldHooks):  # `busted monitor` refuses this combination first
        raise UsageError("--enforce acts on real processes, so it needs --source bpf.",
                         "Drop --source, or drop --enforce.")

    def watchdog(held_map_fd: int, switch_map_fd: int) -> Watchdog:
        return Watchdog(config.fail_closed, held_map_fd, switch_map_fd)

    return Enforcer(config, source, blocker=ConnectBlocker(report_only=config.dry_run),
                    watchdog_factory=watchdog if holds_writes(config) else None)
