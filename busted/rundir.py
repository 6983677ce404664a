"""The runtime directory: safe creation, ownership, the one-monitor lock.

Layout (default ``/run/busted``)::

    /run/busted/            0750 root:busted   group members may reach events.sock
        monitor.lock        0600 root          flock held by the running supervisor
        control.sock        0600 root          `busted status` / `busted stop`
        events.sock         0660 root:busted   the published stream (decrypted prompts!)
        pipe/               0700 busted        internal pipeline sockets

The published stream carries decrypted prompts, so nothing here is ever world-accessible
and we refuse to run in a directory someone else controls (symlink, foreign owner,
group/world-writable).
"""

from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from busted.config import STREAM_GROUP, WORKER_USER, Endpoints
from busted.errors import PrivilegeError, RuntimeDirError

log = logging.getLogger("busted.rundir")

# Files we created and may remove when cleaning up after a crashed run.
_OUR_SOCKETS = ("control.sock", "events.sock")


@dataclass(frozen=True)
class Accounts:
    """Who owns what: the stream group and the unprivileged worker account.

    Only meaningful when running as root; otherwise everything belongs to the caller.
    """

    stream_gid: int | None
    worker_uid: int | None
    worker_gid: int | None

    @classmethod
    def lookup(cls) -> Accounts:
        if os.geteuid() != 0:
            return cls(None, None, None)
        try:
            stream_gid = grp.getgrnam(STREAM_GROUP).gr_gid
        except KeyError:
            stream_gid = None
        try:
            pw = pwd.getpwnam(WORKER_USER)
            worker_uid, worker_gid = pw.pw_uid, pw.pw_gid
        except KeyError:
            worker_uid = worker_gid = None
        return cls(stream_gid, worker_uid, worker_gid)

    def worker_can_reach(self, path: Path) -> bool:
        """Whether the worker account may traverse every directory down to ``path``.

        A worker that dropped privileges must be able to reconnect its sockets later
        (a restarted peer); zmq connects lazily, so this is checked up front.
        """
        if self.worker_uid is None:
            return False
        for directory in [*reversed(Path(path).parents), Path(path)]:
            st = os.stat(directory)
            if st.st_uid == self.worker_uid:
                bit = stat.S_IXUSR
            elif st.st_gid == self.worker_gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
        return True


def _check_owned_dir(path: Path) -> None:
    """Refuse a directory that is a symlink, not ours, or writable by others."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(
            f"{path} is not a plain directory (symlink or file).",
            "Remove it or choose another place with --runtime-dir.",
        )
    if st.st_uid != os.geteuid():
        raise RuntimeDirError(
            f"{path} belongs to uid {st.st_uid}, not to us; refusing to put decrypted "
            "traffic there.",
            "Remove it or choose another place with --runtime-dir.",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RuntimeDirError(
            f"{path} is writable by group or others; refusing to use it.",
            f"Fix it with: chmod 0750 {path}",
        )


class RuntimeDir:
    """Creates, locks, and cleans the runtime directory for one supervisor."""

    def __init__(self, root: Path, accounts: Accounts | None = None) -> None:
        self.root = Path(root)
        self.endpoints = Endpoints(self.root)
        self.accounts = accounts or Accounts.lookup()
        self._lock_fd: int | None = None
        if len(str(self.root / "pipe" / "identity.sock")) > 100:
            # ipc:// paths are unix socket paths, limited to ~107 bytes.
            raise RuntimeDirError(
                f"runtime directory path is too long for unix sockets: {self.root}",
                "Use a shorter path with --runtime-dir (e.g. /run/busted or /tmp/bx).",
            )

    # --- set-up --------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the tree with the right modes, take the lock, remove stale sockets."""
        old_umask = os.umask(0o077)
        try:
            self._make_dir(self.root, 0o750, gid=self.accounts.stream_gid)
            self._take_lock()
            self._make_dir(self.endpoints.pipe, 0o700, uid=self.accounts.worker_uid,
                           gid=self.accounts.worker_gid)
            self._remove_stale()
        finally:
            os.umask(old_umask)

    def _make_dir(self, path: Path, mode: int, uid: int | None = None,
                  gid: int | None = None) -> None:
        try:
            path.mkdir(mode=mode, exist_ok=True)
        except PermissionError as exc:
            raise PrivilegeError(
                f"cannot create the runtime directory {path}: permission denied.",
                "Run as root (sudo busted monitor) or pick a directory you own with "
                "--runtime-dir.",
            ) from exc
        except OSError as exc:
            raise RuntimeDirError(f"cannot create {path}: {exc.strerror}.") from exc
        if uid is not None and os.geteuid() == 0:
            # pipe/ is ours to hand to the worker account; check before chown so we
            # never chown something that was swapped for a symlink.
            if stat.S_ISLNK(os.lstat(path).st_mode):
                raise RuntimeDirError(f"{path} is a symlink; refusing to use it.")
            os.chown(path, uid, -1, follow_symlinks=False)
        else:
            _check_owned_dir(path)
        if gid is not None:
            os.chown(path, -1, gid, follow_symlinks=False)
        os.chmod(path, mode)

    def _take_lock(self) -> None:
        lock_path = self.endpoints.lock_file
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RuntimeDirError(
                    f"another busted monitor (pid {other}) is already running with "
                    f"runtime directory {self.root}.",
                    "Stop it first with `sudo busted stop`, or use another --runtime-dir.",
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _remove_stale(self) -> None:
        """A crashed run leaves socket files behind; we hold the lock, so they are dead."""
        stale = [self.root / name for name in _OUR_SOCKETS]
        stale += [p for p in self.endpoints.pipe.iterdir() if p.suffix == ".sock"]
        for path in stale:
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    path.unlink()
                    log.debug("removed stale socket %s", path)
            except FileNotFoundError:
                pass

    # --- socket files --------------------------------------------------------------
    def secure_socket(self, endpoint: str, kind: str) -> None:
        """Set owner and mode of a freshly bound ipc socket.

        ``kind`` is "pipe" (worker account, 0600), "control" (root, 0600) or "stream"
        (root:busted, 0660).
        """
        path = endpoint.removeprefix("ipc://")
        if kind == "stream":
            os.chmod(path, 0o660)
            if self.accounts.stream_gid is not None:
                os.chown(path, -1, self.accounts.stream_gid)
        else:
            os.chmod(path, 0o600)
            if kind == "pipe" and self.accounts.worker_uid is not None:
                os.chown(path, self.accounts.worker_uid, self.accounts.worker_gid)

    def release(self) -> None:
        """Remove our sockets and drop the lock (the directory itself stays)."""
        self._remove_stale()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def read_lock_pid(root: Path) -> int | None:
    """The pid written in the lock file, if any (for messages and `busted stop`)."""
    try:
        return int((Path(root) / "monitor.lock").read_text().strip())
    except (OSError, ValueError):
        return None
