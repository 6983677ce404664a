"""The body of every worker process: sockets, batching, counters, heartbeats.

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

import ctypes
import importlib
import logging
import math
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

import zmq

from busted import ipc, schema
from busted.config import HEARTBEAT_INTERVAL_S, Endpoints, MonitorConfig
from busted.errors import BustedError
from busted.proctitle import set_process_name
from busted.rundir import Accounts, RuntimeDir
from busted.workers import ROLES
from busted.workers.stage import Stage

log = logging.getLogger("busted.worker")

TICK_INTERVAL_S = 0.1
DRAIN_IDLE_S = 0.1  # a stopping stage exits once its input was quiet this long
FRAMES_PER_WAKEUP = 256  # bound the work between two looks at the control socket
UNPRIVILEGED_ROLES = ("classify", "identity", "policy")
_PR_SET_PDEATHSIG = 1


class StopWorker(Exception):
    """Raised by the SIGTERM handler: stop now, flushing what can be flushed."""


def worker_main(role: str, config: MonitorConfig, parent_pid: int, seq_start: int = 0) -> None:
    """Entry point of a worker process (spawned by the supervisor)."""
    set_process_name(role)  # `busted: capture` in ps, not python3 -c from multiprocessing...
    _die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group; only the supervisor decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_stop)
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("BUSTED_DEBUG") else logging.INFO,
        format=f"%(asctime)s %(levelname)-5s {role}[%(process)d]: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    ctx = zmq.Context()
    link = SupervisorLink(ctx, role, config)
    try:
        if role == "capture":
            from busted.workers.capture import CaptureLoop

            CaptureLoop(ctx, config, link, seq_start).run()
        else:
            StageLoop(ctx, config, link, role, parent_pid).run()
    except BustedError as exc:
        log.error("%s", exc)
        link.send({"type": "fatal", "error": str(exc)})
        link.close()
        ctx.destroy(linger=500)
        sys.exit(3)
    except StopWorker:
        pass
    link.close()
    ctx.destroy(linger=1000)


def _raise_stop(signum: int, frame: Any) -> None:
    raise StopWorker()


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel send us SIGTERM if the supervisor dies, so no worker is orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the heartbeat timeout still applies
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


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

    def heartbeat(self, now: float, report: dict[str, Any], kind: str = "heartbeat") -> None:
        self.send({"type": kind, **report})
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


class PubSender:
    """The output stage's 'next hop': the published stream. PUB never blocks; a slow
    subscriber loses messages at its own high-water mark without slowing us, and can
    tell from the ``seq`` gaps."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.sent = 0
        self.dropped = 0

    def send_frame(self, frame: bytes, count: int) -> None:
        self.sock.send_multipart([b"events", frame], zmq.NOBLOCK, copy=False)
        self.sent += count

    def add(self, events: list[dict[str, Any]]) -> None:
        if events:
            self.send_frame(schema.encode_batch(events), len(events))

    def publish_stats(self, stats: dict[str, Any]) -> None:
        self.sock.send_multipart([b"stats", ipc.pack(stats)], zmq.NOBLOCK)

    def due_in(self) -> None:
        return None

    def flush_if_due(self) -> None:
        pass

    def flush(self) -> None:
        pass


def load_stage(role: str, config: MonitorConfig) -> Stage:
    module = importlib.import_module(f"busted.workers.{role}")
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
            self.out: Any = PubSender(pub)
        else:
            push = ipc.make_socket(ctx, zmq.PUSH)
            push.connect(ep.stage_input(ROLES[ROLES.index(role) + 1]))
            self.out = ipc.BatchSender(push, wait_ms=config.send_timeout_ms)
        # Verdicts for held writes travel here: room for a burst of them.
        self.feedback_sock = ipc.make_socket(ctx, zmq.PUSH, hwm=10000, linger_ms=0)
        self.feedback_sock.connect(ep.feedback)
        self.stage.feedback = self._send_feedback
        self.stage.setup()
        if drop_privileges(role, config, rundir.accounts):
            # The kernel forgets the parent-death signal when credentials change.
            _die_with_parent(self.parent_pid)
            log.debug("now running as uid %d", os.getuid())

    def _send_feedback(self, command: dict[str, Any]) -> None:
        try:
            self.feedback_sock.send(ipc.pack(command), zmq.NOBLOCK)
        except zmq.Again:
            self.counters.error("feedback_dropped", "capture is not reading feedback")

    # --- the loop ------------------------------------------------------------------
    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.input, zmq.POLLIN)
        poller.register(self.link.sock, zmq.POLLIN)
        self.link.heartbeat(time.monotonic(), self._report(), kind="hello")
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
        if kind == "stop":
            return True
        if kind == "stats" and isinstance(self.out, PubSender):
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
        self.link.heartbeat(time.monotonic(), self._report(), kind="bye")
        self.input.close(linger=0)
        self.feedback_sock.close(linger=0)
