"""Acting on deny decisions (``busted monitor --enforce``), inside the capture worker.

Capture is the only root worker, so every action starts here:

- **Held writes.** With ``-DENFORCE`` the TLS write probe of a process without a
  controlling terminal sends the write's bytes at the call's entry and stops the
  process (SIGSTOP) before the library has encrypted anything. :meth:`track` gives such
  an event its ``hold_id`` (its ``seq``) and starts the clock; the classify and policy
  workers answer with ``release`` (allow, or nothing to judge yet) or ``kill`` (deny)
  feedback, and the process gets SIGCONT or SIGKILL. A hold without an answer by its
  deadline (``--hold-deadline-ms``) is resumed (fail open) or killed
  (``--fail-closed``). A separate watchdog process (:mod:`busted.enforce.watchdog`)
  does the same if this worker dies; when the whole monitor stops, :meth:`close`
  releases everything still held.
- **Denies of processes that were not held** (a controlling terminal, plain-text
  model servers): the process is killed at once and put in the kernel's
  ``kill_on_write`` map, so a TLS write it starts after the verdict is killed before
  encryption. The denied request itself has left the host.
- **Blocked destinations.** The policy's ``block_destinations`` set (see
  :mod:`busted.enforce.destinations`) fills the deny map of the cgroup connect programs
  (:mod:`busted.enforce.connect_blocker`); DNS answers for blocked names add their
  addresses. Refused connects are reported.

Every action is an ``ENFORCEMENT`` event (``action``, ``policy``, ``hold_ms``);
``--dry-run`` holds nothing, kills nothing, refuses nothing, and reports ``would-kill``
/ ``would-block-connect`` instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from busted import messages
from busted.config import MonitorConfig
from busted.enforce.destinations import DestinationError, parse
from busted.enforce.hooks import Blocker, HoldHooks, HoldWatchdog
from busted.errors import BustedError
from busted.rootfiles import open_private
from busted.schema import ENFORCEMENT_CONTEXT

log = logging.getLogger("busted.enforce")

Event = dict[str, Any]

# One enforcing monitor per host: two would each stop and resume the same processes,
# and one's SIGCONT would end the other's hold.
HOST_LOCK = "/run/lock/busted-enforce.lock"
_LATENCY_WINDOW = 4096  # recent hold latencies kept for the p50/p99 in `busted status`
SWEEP_EVERY_S = 0.1
SWEEP_GRACE_S = 0.05
# The watchdog hears of a hold after its event has left for classify, and of its end
# with the next hold or at most this much later (well within its grace after a
# deadline, busted.enforce.watchdog.GRACE_S): one wake-up of it per hold, off the path.
WATCHDOG_DONE_DELAY_S = 0.01


@dataclass(slots=True)
class _Hold:
    pid: int
    started: float  # wall time the write was made (kernel timestamp)
    deadline: float  # time.monotonic()
    context: Event = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Enforcer:
    """Holds, releases, kills and blocks for the capture worker.

    ``source`` is the kernel source's hold side, ``blocker`` the connect blocker (a
    :class:`busted.enforce.connect_blocker.ConnectBlocker` or a fake), ``watchdog`` the
    watchdog (or ``watchdog_factory``, called at start with the fds of the kernel's
    ``held_pids`` and ``hold_switch`` maps): see :mod:`busted.enforce.hooks`.
    ``protected`` pids are never signalled (busted's own processes).
    """

    def __init__(self, config: MonitorConfig, source: HoldHooks, *,
                 blocker: Blocker | None = None, watchdog: HoldWatchdog | None = None,
                 watchdog_factory: Callable[[int, int], HoldWatchdog] | None = None,
                 protected: frozenset[int] = frozenset()) -> None:
        self.dry_run = bool(config.dry_run)
        self.fail_closed = bool(config.fail_closed)
        self.deadline_s = config.hold_deadline_ms / 1000.0
        self.source = source
        self.blocker = blocker
        self.watchdog = watchdog
        # Called at start with the fds of the kernel's held_pids and hold_switch maps (or -1).
        self.watchdog_factory = watchdog_factory
        self._next_sweep = 0.0
        self._dog_since: float | None = None  # when the oldest line not yet flushed was made
        self._dog_hold = False  # a hold among them
        self.protected = protected | {0, 1, os.getpid(), os.getppid()}
        self.lock_path = HOST_LOCK
        self._lock = -1
        self._holds: dict[int, _Hold] = {}  # hold_id -> hold
        self._by_pid: dict[int, set[int]] = {}  # pid -> its hold ids
        self._pidfds: dict[int, int] = {}  # pid -> pidfd while it is held
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._out: list[Event] = []
        self._names: dict[str, set[int]] = {}  # blocked host -> ports (0: all)
        self._blocked: set[tuple[str, int]] = set()  # (ip, port) in the kernel map
        self._policy_blocks: set[tuple[str, int]] = set()  # from the policy's list
        self._learnt: dict[tuple[str, int], str] = {}  # from DNS answers -> the name
        self.stats: dict[str, int] = {
            "holds": 0, "released": 0, "killed": 0, "late_released": 0, "late_killed": 0,
            "would_kill": 0, "blocked_destinations": 0, "unknown_holds": 0,
        }

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if not self.dry_run:
            self._lock = _host_lock(self.lock_path)
        if self.blocker is not None:
            self.blocker.start()
        if self.watchdog_factory is not None and self.watchdog is None:
            self.watchdog = self.watchdog_factory(self.source.held_map_fd(),
                                                  self.source.switch_map_fd())
        if not self.dry_run:
            self.source.set_holding(True)  # only now is someone there to answer
        log.info("enforcement %s: holds %s, deadline %d ms, %s",
                 "DRY RUN (reporting only)" if self.dry_run else "on",
                 "off" if self.dry_run else "on",
                 int(self.deadline_s * 1000), "fail closed" if self.fail_closed else "fail open")

    def close(self) -> list[Event]:
        """Stopping: nobody may stay stopped. Released the fail-mode way."""
        self.source.set_holding(False)  # no new holds while the probes detach
        for pid in list(self._by_pid):
            self._finish_pid(pid, kill=self.fail_closed, action="released-at-exit"
                             if not self.fail_closed else "killed-at-exit")
        if self.watchdog is not None:
            self.watchdog.close()
            self.watchdog = None
        if self.blocker is not None:
            self._out += self.blocker.poll(0)
            self.blocker.close()
            self.blocker = None
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1
        out, self._out = self._out, []
        return out

    # --- the event stream ---------------------------------------------------------------

    def track(self, events: list[Event]) -> None:
        """Called on numbered events before they leave capture."""
        for event in events:
            if event.get("held"):
                self._hold(event)
            elif event.get("event_type") == "DNS_ANSWER" and self._names:
                self._dns_answer(event)

    def _hold(self, event: Event) -> None:
        hold_id = int(event["seq"])
        pid = int(event.get("pid") or 0)
        event["hold_id"] = hold_id
        if pid in self.protected:
            event["held"] = False
            return
        context = {k: event[k] for k in ENFORCEMENT_CONTEXT if k in event}
        started = float(event.get("timestamp") or time.time())
        # The deadline runs from the stop in the kernel, not from when we read about it.
        waited = min(max(0.0, time.time() - started), self.deadline_s)
        hold = _Hold(pid, started, time.monotonic() + self.deadline_s - waited, context)
        self._holds[hold_id] = hold
        first = pid not in self._by_pid
        self._by_pid.setdefault(pid, set()).add(hold_id)
        self.stats["holds"] += 1
        if first:
            try:
                self._pidfds[pid] = os.pidfd_open(pid)
            except OSError:  # it is gone already
                pass
        if self.watchdog is not None:
            self.watchdog.hold(pid, time.time() + self.deadline_s)
            self._dog_hold = True
            self._dog_line()

    def due_in(self, now: float) -> float | None:
        """Seconds until the next hold deadline or watchdog flush (None: nothing due)."""
        due = [h.deadline for h in self._holds.values()]
        if self._dog_since is not None:
            due.append(self._dog_since + WATCHDOG_DONE_DELAY_S)
        return max(0.0, min(due) - now) if due else None

    def tick(self, now: float) -> list[Event]:
        """Deadlines, refused-connect records, the watchdog's news (called once the
        loop has sent what it read); returns ENFORCEMENT events to send."""
        if self._dog_since is not None and (
                self._dog_hold or now - self._dog_since >= WATCHDOG_DONE_DELAY_S):
            self._flush_watchdog()
        for hold_id, hold in list(self._holds.items()):
            if now >= hold.deadline and hold_id in self._holds:
                self._fail(hold.pid, "late", f"no verdict within {int(self.deadline_s * 1000)} ms")
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_S
            self._sweep()
        if self.blocker is not None:
            self._out += self.blocker.poll(0)
        out, self._out = self._out, []
        return out

    def _sweep(self) -> None:
        """Stops the kernel made that never reached us (a record lost on the way): past
        the deadline they get the fail mode too."""
        held = self.source.held_pids()
        if not held:
            return
        limit_ns = time.monotonic_ns() - int((self.deadline_s + SWEEP_GRACE_S) * 1e9)
        for pid, stopped_ns in held.items():
            if pid in self._by_pid or stopped_ns > limit_ns:
                continue
            self._fail(pid, "unseen", "the held write's record was lost")

    def _fail(self, pid: int, when: str, why: str) -> None:
        """The fail mode for a hold nobody answered: resume (open) or kill (closed)."""
        log.warning("pid %d held: %s; %s", pid, why, "killing it" if self.fail_closed else "resuming it")
        self.stats["late_killed" if self.fail_closed else "late_released"] += 1
        self._finish_pid(pid, kill=self.fail_closed, error=why,
                         action=f"{'killed' if self.fail_closed else 'released'}-{when}")

    # --- verdicts from classify / policy ---------------------------------------------------

    def feedback(self, command: Event) -> None:
        cmd = command.get("cmd")
        if cmd == messages.RELEASE:
            self._release(int(command.get("hold_id") or 0))
        elif cmd == messages.KILL:
            self._kill(command)
        elif cmd == messages.BLOCK:
            self._set_blocks(command.get("destinations") or [])

    def _release(self, hold_id: int) -> None:
        hold = self._holds.pop(hold_id, None)
        if hold is None:
            self.stats["unknown_holds"] += 1  # already resolved (deadline, another verdict)
            return
        self.stats["released"] += 1
        self._latencies.append((time.time() - hold.started) * 1000.0)
        ids = self._by_pid.get(hold.pid)
        if ids is not None:
            ids.discard(hold_id)
            if not ids:  # the last write this process waits on
                del self._by_pid[hold.pid]
                self._let_go(hold.pid, signal.SIGCONT)

    def _kill(self, command: Event) -> None:
        pid = int(command.get("pid") or 0)
        hold = self._holds.get(int(command.get("hold_id") or 0))
        context = {k: command[k] for k in ENFORCEMENT_CONTEXT if k in command}
        if pid in self.protected:
            log.warning("deny for busted's own process %d ignored", pid)
            return
        if self.dry_run:
            self.stats["would_kill"] += 1
            self._out.append(self._event("would-kill", pid, context, seq=command.get("seq")))
            return
        if hold is not None or pid in self._by_pid:
            self._finish_pid(pid, kill=True, action="killed", context=context, seq=command.get("seq"))
            return
        # Not held: a process with a terminal, or a plain-text write. The request has
        # left; make sure nothing else does.
        if not _same_process(pid, str(command.get("process_name") or "")):
            log.info("deny for pid %d not acted on: the process is gone", pid)
            self._out.append(self._event("not-killed-gone", pid, context, seq=command.get("seq")))
            return
        self.source.kill_on_write(pid)
        self._signal(pid, signal.SIGKILL)
        self.stats["killed"] += 1
        self._out.append(self._event("killed-after-send", pid, context, seq=command.get("seq")))

    def _finish_pid(self, pid: int, *, kill: bool, action: str, context: Event | None = None,
                    seq: Any = None, error: str = "") -> None:
        """End every hold of ``pid`` with one signal and one ENFORCEMENT event."""
        ids = self._by_pid.pop(pid, set())
        holds = [self._holds.pop(i) for i in sorted(ids) if i in self._holds]
        started = min((h.started for h in holds), default=time.time())
        held_ms = (time.time() - started) * 1000.0 if holds else 0.0
        # What the held write said about its connection, then what the verdict added.
        context = {**(holds[-1].context if holds else {}), **(context or {})}
        if kill and action == "killed":
            self.stats["killed"] += 1
        self._let_go(pid, signal.SIGKILL if kill else signal.SIGCONT)
        event = self._event(action, pid, context, seq=seq, hold_ms=held_ms)
        if error:
            event["policy_error"] = error
            event["policy"] = "deny" if kill else "allow"
        self._out.append(event)

    # --- signals ---------------------------------------------------------------------------

    def _signal(self, pid: int, sig: int) -> None:
        if pid in self.protected:
            return
        pidfd = self._pidfds.get(pid)
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass  # it exited meanwhile

    def _let_go(self, pid: int, sig: int) -> None:
        """The last signal of a hold (SIGCONT or SIGKILL); then forget the process."""
        self._signal(pid, sig)
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            os.close(pidfd)
        self.source.unhold(pid)
        if self.watchdog is not None:
            self.watchdog.done(pid)
            self._dog_line()

    def _dog_line(self) -> None:
        if self._dog_since is None:
            self._dog_since = time.monotonic()

    def _flush_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.flush()
        self._dog_since = None
        self._dog_hold = False

    def _event(self, action: str, pid: int, context: Event, *, seq: Any = None,
               hold_ms: float = 0.0) -> Event:
        event: Event = {
            "event_type": "ENFORCEMENT", "timestamp": time.time(), "action": action,
            "policy": "deny", "pid": pid, "tid": pid, "hold_ms": round(hold_ms, 3),
        }
        event.update(context)
        if seq is not None:
            event["judged_seq"] = seq
        return event

    # --- blocked destinations --------------------------------------------------------------

    def _set_blocks(self, entries: list[Any]) -> None:
        wanted: set[tuple[str, int]] = set()
        names: dict[str, set[int]] = {}
        for entry in entries:
            text = entry.get("text") if isinstance(entry, dict) else entry
            try:
                dest = parse(text)
            except DestinationError as exc:
                log.warning("block_destinations: %s (entry ignored)", exc)
                continue
            if dest.ip:
                wanted.add((dest.ip, dest.port))
            else:
                names.setdefault(dest.host, set()).add(dest.port)
                addrs = entry.get("addrs", []) if isinstance(entry, dict) else []
                wanted |= {(str(a), dest.port) for a in addrs}
        # Addresses learnt from DNS answers stay while their name is still blocked.
        self._learnt = {key: host for key, host in self._learnt.items()
                        if key[1] in names.get(host, ())}
        self._names = names
        self._policy_blocks = wanted
        self._apply(wanted | set(self._learnt))

    def _dns_answer(self, event: Event) -> None:
        name = str(event.get("dns_name") or "").lower().rstrip(".")
        ports = self._names.get(name)
        if not ports:
            return
        new = {(str(addr), port) for addr in event.get("dns_addrs") or () for port in ports}
        if not new <= self._blocked:
            for key in new:
                self._learnt.setdefault(key, name)
            self._apply(self._blocked | new)

    def _apply(self, wanted: set[tuple[str, int]]) -> None:
        if self.blocker is None:
            return
        for ip, port in self._blocked - wanted:
            self.blocker.unblock(ip, port)
        for ip, port in wanted - self._blocked:
            try:
                self.blocker.block(ip, port)
            except (ValueError, OSError) as exc:
                log.warning("cannot block %s port %d: %s", ip, port, exc)
                continue
            log.info("%s new connections to %s%s", "reporting" if self.dry_run else "refusing",
                     ip, f" port {port}" if port else "")
        self._blocked = wanted
        self.stats["blocked_destinations"] = len(wanted)

    # --- status ------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        latencies = list(self._latencies)
        return {
            **self.stats,
            "held_now": len(self._holds),
            "hold_ms_p50": round(_percentile(latencies, 0.50), 3),
            "hold_ms_p99": round(_percentile(latencies, 0.99), 3),
        }


def _host_lock(path: str) -> int:
    """Hold the host's enforcement lock (released when this process ends)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = open_private(path, "the enforcement lock", flags=os.O_RDWR)  # /run/lock is 1777
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise BustedError(
            f"Another busted monitor is already enforcing on this host (pid {holder}): two "
            "would stop and resume the same processes.",
            "Stop it first (sudo busted stop --runtime-dir ...), or run this one without "
            "--enforce, or with --enforce --dry-run.",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getppid()).encode(), 0)
    return fd


def _same_process(pid: int, name: str, proc: str = "/proc") -> bool:
    """The pid still runs the program the event named (pids are reused)."""
    try:
        with open(f"{proc}/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return False
    return not name or comm == name[:15]
