"""Feedback to capture under ``--enforce``, one unix datagram per message.

Feedback (hold answers, verdicts) otherwise goes over ZeroMQ (``pipe/feedback.sock``),
where each message wakes three threads one after the other: the sender's I/O thread,
capture's I/O thread, then capture. A held write's process is stopped until its answer
arrives, and on this VM each wake-up across vCPUs costs ~0.17 ms (bench/README.md,
Enforcement). A datagram on a plain unix socket that capture waits on wakes capture
alone. ZeroMQ stays the fallback for what a datagram cannot carry at that moment
(capture restarting, a message larger than the socket buffer, a full buffer), so
nothing is lost that the ZeroMQ path would not also lose.

Who may send: the socket lives in ``pipe/`` (root and the worker account only), is
0600 and owned by the worker account like the pipe's ZeroMQ sockets, and capture checks
each datagram's sender (``SCM_CREDENTIALS``, filled in by the kernel) against the same
uids, as libzmq does for the ZeroMQ sockets.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

from busted.config import Endpoints

NAME = "answers.sock"
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
_MAX_DATAGRAM = 65536
_PER_CALL = 1000  # bound the work between two looks at everything else


def answers_path(endpoints: Endpoints) -> Path:
    return endpoints.pipe / NAME


class AnswerSender:
    """A stage's end: ``send`` returns False when the datagram could not go (the caller
    then uses ZeroMQ)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK
                                  | socket.SOCK_CLOEXEC)

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendto(data, self.path)
        except OSError:  # no capture there (yet), buffer full, too large
            return False
        return True

    def close(self) -> None:
        self.sock.close()


class AnswerReceiver:
    """Capture's end, bound at ``path``; ``allow_uids`` may send, ``owner_uid`` (-1: keep)
    owns the socket file."""

    def __init__(self, path: Path, allow_uids: tuple[int, ...], owner_uid: int = -1) -> None:
        self.path = path
        self.allow_uids = frozenset(allow_uids)
        self.refused = 0
        _remove_stale(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK
                                  | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        old_umask = os.umask(0o177)
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old_umask)
        if owner_uid != -1:
            os.chown(path, owner_uid, -1, follow_symlinks=False)
        self._ancillary = socket.CMSG_SPACE(_UCRED.size)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[bytes]:
        """The datagrams waiting now, from allowed senders only."""
        out: list[bytes] = []
        for _ in range(_PER_CALL):
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(_MAX_DATAGRAM, self._ancillary)
            except BlockingIOError:
                break
            if _sender_uid(ancillary) in self.allow_uids:
                out.append(data)
            else:
                self.refused += 1
        return out

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _sender_uid(ancillary) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            return _UCRED.unpack_from(data)[1]
    return None


def _remove_stale(path: Path) -> None:
    """A killed capture's socket file (only a socket: never anything else there)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(st.st_mode):
        os.unlink(path)
