"""The capture worker: drains a source (the kernel probes, or a synthetic / replay
source), numbers each event (``seq``) and hands batches to classify without ever
blocking.

Sockets: PUSH connected to ``pipe/classify.sock``; PULL bound at
``pipe/feedback.sock`` (verdicts from downstream, applied to the source); DEALER to
the supervisor. Runs as root when the source is the kernel (it loads eBPF).

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

from busted import ipc
from busted.config import MonitorConfig
from busted.rundir import RuntimeDir
from busted.sources import Source, open_source
from busted.workers.runner import Counters, SupervisorLink

log = logging.getLogger("busted.capture")

IDLE_POLL_S = 0.05  # longest wait for the source when nothing is pending


class CaptureLoop:
    def __init__(self, ctx: zmq.Context, config: MonitorConfig, link: SupervisorLink,
                 seq_start: int, source: Source | None = None) -> None:
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
            self.feedback = ipc.make_socket(ctx, zmq.PULL, hwm=1000)
            self.feedback.bind(ep.feedback)
            rundir.secure_socket(ep.feedback, "pipe")
        finally:
            os.umask(old_umask)
        self.source = source or open_source(config)

    def run(self) -> None:
        self.source.start()
        log.info("capture ready: source %s", self.config.source)
        self.link.heartbeat(time.monotonic(), self._report(), kind="hello")
        try:
            while True:
                now = time.monotonic()
                wait = min(IDLE_POLL_S, max(0.0, self.link.heartbeat_due(now)))
                if (due := self.out.due_in()) is not None:
                    # At least 1 ms: sources wait in whole milliseconds, and a wait
                    # rounded down to 0 would spin until the flush is due.
                    wait = min(wait, max(due, 0.001))
                if self.source.exhausted:
                    self.out.flush()
                    if self.link.sock.poll(int(wait * 1000)) and self._commands():
                        return
                else:
                    events = self.source.poll(wait)
                    if events:
                        self._number(events)
                        self.out.add(events)
                self.out.flush_if_due()
                self._apply_feedback()
                if self._commands():
                    return
                now = time.monotonic()
                if now >= self.link.next_heartbeat:
                    self.link.heartbeat(now, self._report())
        finally:
            self.out.flush()
            self.source.close()
            self.link.heartbeat(time.monotonic(), self._report(), kind="bye")
            self.feedback.close(linger=0)

    def _number(self, events: list[dict[str, Any]]) -> None:
        seq = self.seq
        for event in events:
            event["seq"] = seq
            seq += 1
        self.counters.received += seq - self.seq
        self.seq = seq

    def _commands(self) -> bool:
        return any(c.get("type") == "stop" for c in self.link.commands())

    def _apply_feedback(self) -> None:
        for _ in range(1000):
            try:
                frame = self.feedback.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self.source.feedback(ipc.unpack(frame))
            except Exception as exc:  # noqa: BLE001 - a bad verdict never stops capture
                self.counters.error(type(exc).__name__, f"feedback: {exc!r}")

    def _report(self) -> dict[str, Any]:
        report = self.counters.report(self.out.sent, self.out.dropped, self.source.stats())
        report["next_seq"] = self.seq
        report["exhausted"] = bool(self.source.exhausted)
        return report
