"""The hold watchdog: no process is left stopped, whatever happens to busted.

Under ``--enforce`` the capture worker stops (SIGSTOP) a process whose write may carry
a denied prompt and resumes or kills it once the policy has decided. If the capture
worker — or the whole monitor — dies in between, nobody would ever resume it. So the
capture worker starts this watchdog as a separate process in its own session (it
survives its parent, ignores Ctrl-C and the parent-death signal) and tells it, over a
pipe, each pid it holds and until when:

    hold <pid> <deadline, unix seconds>\\n
    done <pid>\\n

The watchdog keeps a pidfd for each held process (a recycled pid can never be hit)
and applies the fail mode — SIGCONT (fail open, the default) or SIGKILL (fail closed) —
to every process still held when its deadline passes or when the pipe closes (the
capture worker exited or was killed), then exits.

It also inherits the fd of the kernel's ``held_pids`` map (``bpf/tls.bpf.c``): the probe
notes there every process it stops, before capture has even read the record. When the
pipe closes, every pid still in that map gets the fail mode too — a process stopped
just before capture died, whose record capture never read, is not forgotten.
"""

from __future__ import annotations

import ctypes as ct
import os
import select
import signal
import subprocess
import sys
import time

# Grace added to each deadline: the capture worker acts first; the watchdog only
# covers for it.
GRACE_S = 0.05


class Watchdog:
    """The capture worker's handle on its watchdog process."""

    def __init__(self, fail_closed: bool, held_map_fd: int = -1) -> None:
        read_fd, self._write_fd = os.pipe()
        os.set_inheritable(read_fd, True)
        fds = (read_fd,) if held_map_fd < 0 else (read_fd, held_map_fd)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "busted.watchdog", str(read_fd),
             "closed" if fail_closed else "open", str(held_map_fd)],
            pass_fds=fds, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        os.close(read_fd)

    def hold(self, pid: int, deadline: float) -> None:
        self._send(f"hold {pid} {deadline:.3f}\n")

    def done(self, pid: int) -> None:
        self._send(f"done {pid}\n")

    def _send(self, line: str) -> None:
        try:
            os.write(self._write_fd, line.encode())
        except OSError:  # the watchdog is gone: the caller still has its own deadlines
            pass

    def close(self) -> None:
        """Closing the pipe makes the watchdog release everything still held and exit."""
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _signal(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass  # it exited on its own


class _MapAttr(ct.Structure):
    """The part of union bpf_attr that BPF_MAP_GET_NEXT_KEY uses."""

    _fields_ = [("map_fd", ct.c_uint32), ("pad", ct.c_uint32), ("key", ct.c_uint64),
                ("next_key", ct.c_uint64), ("flags", ct.c_uint64)]


_SYS_BPF = 321  # x86-64
_BPF_MAP_GET_NEXT_KEY = 4


def map_pids(map_fd: int) -> list[int]:
    """The u32 keys of a BPF hash map (the held pids), read with the bpf syscall."""
    libc = ct.CDLL(None, use_errno=True)
    pids: list[int] = []
    key, next_key = ct.c_uint32(0), ct.c_uint32(0)
    first = True
    while len(pids) < 65536:
        attr = _MapAttr(map_fd, 0, 0 if first else ct.addressof(key), ct.addressof(next_key), 0)
        if libc.syscall(_SYS_BPF, _BPF_MAP_GET_NEXT_KEY, ct.byref(attr), ct.sizeof(attr)) != 0:
            break  # ENOENT: no more keys
        pids.append(next_key.value)
        key.value = next_key.value
        first = False
    return pids


def run(read_fd: int, fail_closed: bool, held_map_fd: int = -1) -> None:
    """The watchdog process's loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the pipe's end stops us
    fail_signal = signal.SIGKILL if fail_closed else signal.SIGCONT
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
            for pidfd, _ in held.values():
                _signal(pidfd, fail_signal)
                os.close(pidfd)
            if held_map_fd >= 0:
                for pid in map_pids(held_map_fd):
                    if pid not in held and pid > 1:
                        try:
                            os.kill(pid, fail_signal)
                        except ProcessLookupError:
                            pass
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
    run(int(sys.argv[1]), sys.argv[2] == "closed", int(sys.argv[3]) if len(sys.argv) > 3 else -1)
