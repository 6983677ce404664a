"""The hold watchdog: no process is left stopped, whatever happens to busted.

Under ``--enforce`` the capture worker stops (SIGSTOP) a process whose write may carry
a denied prompt and resumes or kills it once the policy has decided. If the capture
worker — or the whole monitor — dies in between, nobody would ever resume it. So the
capture worker starts this watchdog as a separate process in its own session (it
survives its parent, ignores Ctrl-C and the parent-death signal) and tells it, over a
pipe, each pid it holds and until when:

    hold <pid> <deadline, unix seconds>\\n
    done <pid>\\n

(:meth:`Watchdog.flush` writes what was said since the last flush at once: the
enforcer flushes after the held write's event has left for classify, so waking the
watchdog never delays a verdict, and lets a ``done`` wait for the next ``hold``.)

The watchdog keeps a pidfd for each held process (a recycled pid can never be hit)
and applies the fail mode — SIGCONT (fail open, the default) or SIGKILL (fail closed) —
to every process still held when its deadline passes or when the pipe closes (the
capture worker exited or was killed), then exits.

It also inherits the fd of the kernel's ``held_pids`` map (``bpf/tls.bpf.c``): the probe
notes there every process it stops, before capture has even read the record. When the
pipe closes, every pid in that map gets the fail mode too — a process stopped just
before capture died, whose record capture never read, is not forgotten — and the map is
watched until the capture process has fully exited: the kernel takes seconds to detach
a dead process's probes. It also inherits the probes' ``hold_switch``: the first thing
it does when the pipe closes is to turn holding off, so those lingering probes stop
nobody new (a busy TLS client could otherwise be stopped after the watchdog's last look
and stay stopped for good).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

from busted.kernel.bpf_syscall import map_delete_u32, map_set_u32, map_u32_keys
from busted.kernel.procstat import is_stopped
from busted.proctitle import set_process_name

# Grace added to each deadline: the capture worker acts first; the watchdog only
# covers for it.
GRACE_S = 0.05


class Watchdog:
    """The capture worker's handle on its watchdog process."""

    def __init__(self, fail_closed: bool, held_map_fd: int = -1, switch_map_fd: int = -1) -> None:
        read_fd, self._write_fd = os.pipe()
        os.set_inheritable(read_fd, True)
        fds = (read_fd,) + tuple(fd for fd in (held_map_fd, switch_map_fd) if fd >= 0)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "busted.enforce.watchdog", str(read_fd),
             "closed" if fail_closed else "open", str(held_map_fd), str(switch_map_fd)],
            pass_fds=fds, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        os.close(read_fd)
        self._pending: list[str] = []

    def hold(self, pid: int, deadline: float) -> None:
        self._pending.append(f"hold {pid} {deadline:.3f}\n")

    def done(self, pid: int) -> None:
        self._pending.append(f"done {pid}\n")

    def flush(self) -> None:
        """One write for the lines since the last flush: each write wakes the watchdog,
        and the capture worker calls this off a held write's path."""
        if not self._pending:
            return
        data, self._pending = "".join(self._pending).encode(), []
        try:
            os.write(self._write_fd, data)
        except OSError:  # the watchdog is gone: the caller still has its own deadlines
            pass

    def close(self) -> None:
        """Closing the pipe makes the watchdog release everything still held; it then
        watches the kernel's map until this process has exited, so it is not waited for."""
        if self._write_fd >= 0:
            self.flush()
            os.close(self._write_fd)
            self._write_fd = -1


def _signal(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass  # it exited on its own


_AFTER_EOF_S = 30.0  # longest watch of the map once capture is gone
_SCAN_EVERY_S = 0.005
_SETTLE_S = 0.5  # after capture's exit: a stop noted but not yet sent has landed by then


def _release_map(map_fd: int, fail_signal: int) -> int:
    """Apply the fail mode to every process in the map that is stopped, and forget it.

    An entry whose process still runs is kept for the next look: the probe notes a
    stop just BEFORE sending it, so a SIGCONT now could come first and be lost. Returns
    the number of entries kept."""
    kept = 0
    for pid in map_u32_keys(map_fd):
        state = is_stopped(pid)
        if pid <= 1 or state is None:
            map_delete_u32(map_fd, pid)
            continue
        if state or fail_signal == signal.SIGKILL:
            try:
                os.kill(pid, fail_signal)
            except ProcessLookupError:
                pass
            map_delete_u32(map_fd, pid)
        else:
            kept += 1
    return kept


def _watch_until_gone(map_fd: int, capture: int, fail_signal: int) -> None:
    """Resume (or kill) whatever the probes stop until the capture process is gone and
    its last stops have landed."""
    deadline = time.monotonic() + _AFTER_EOF_S
    gone_at = None
    while time.monotonic() < deadline:
        kept = _release_map(map_fd, fail_signal)
        if gone_at is None and (capture < 0 or select.select([capture], [], [], 0)[0]):
            gone_at = time.monotonic()  # exited: its files (the probes) are released
        if gone_at is not None and (not kept or time.monotonic() - gone_at > _SETTLE_S):
            return
        time.sleep(_SCAN_EVERY_S)


def run(read_fd: int, fail_closed: bool, held_map_fd: int = -1, switch_map_fd: int = -1) -> None:
    """The watchdog process's loop."""
    set_process_name("watchdog")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the pipe's end stops us
    fail_signal = signal.SIGKILL if fail_closed else signal.SIGCONT
    try:  # the capture worker that started us: watched until it has fully exited
        capture = os.pidfd_open(os.getppid())
    except OSError:
        capture = -1
    held: dict[int, tuple[int, float]] = {}  # pid -> (pidfd, deadline)
    buffer = b""
    while True:
        now = time.time()
        for pid, (pidfd, deadline) in list(held.items()):
            if now >= deadline + GRACE_S:
                _signal(pidfd, fail_signal)
                os.close(pidfd)
                del held[pid]
        wait = min((d for _, d in held.values()), default=now + 3600) + GRACE_S - now
        ready, _, _ = select.select([read_fd], [], [], max(0.0, wait))
        if not ready:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:  # the capture worker is gone: release everyone now
            if switch_map_fd >= 0:  # first: the probes that linger hold nobody new
                map_set_u32(switch_map_fd, 0, 0)
            for pidfd, _ in held.values():
                _signal(pidfd, fail_signal)
                os.close(pidfd)
            if held_map_fd >= 0:
                _watch_until_gone(held_map_fd, capture, fail_signal)
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"hold":
                pid, deadline = int(parts[1]), float(parts[2])
                if pid in held:
                    held[pid] = (held[pid][0], deadline)
                    continue
                try:
                    held[pid] = (os.pidfd_open(pid), deadline)
                except ProcessLookupError:
                    pass
            elif len(parts) == 2 and parts[0] == b"done":
                entry = held.pop(int(parts[1]), None)
                if entry is not None:
                    os.close(entry[0])


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[3:5]]
    run(int(sys.argv[1]), sys.argv[2] == "closed", *args)
