"""The runtime directory: safe creation, ownership, the one-monitor lock, clean-up.

Layout (default ``/run/busted``; as root, with the ``busted`` group and account)::

    /run/busted/            0750 root:busted   group members may reach events.sock
        monitor.lock        0600 root          flock held by the running supervisor
        control.sock        0600 root          `busted status` / `busted stop`
        events.sock         0660 root:busted   the published stream (decrypted prompts!)
        pipe/               0710 root:busted   internal pipeline sockets:
            *.sock          0600 busted        the worker account and root only

Each socket also checks who connects (the kernel's peer credentials, see
:func:`busted.ipc.bind_restricted`), so a widened mode lets nobody else in.

busted never changes the mode or owner of a directory it did not create. A directory
given with ``--runtime-dir`` that exists already is used as it is, and only when it is
safe and holds nothing but busted's own names (:data:`OWN_NAMES`, from an earlier run);
``sudo busted monitor --runtime-dir /etc`` is refused instead of turning ``/etc`` into
a private directory. Everything busted created is removed on a clean exit; what a
killed run left (its lock no longer held) is recognised and replaced. The lock file
records whether busted created the directory, so the run after a crash still removes
a directory busted made.
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

import zmq

from busted import ipc
from busted.config import STREAM_GROUP, WORKER_USER, Endpoints
from busted.errors import PrivilegeError, RuntimeDirError
from busted.rootfiles import open_private, others_can_change, unsafe_path

log = logging.getLogger("busted.rundir")

# Everything busted puts in a runtime directory. Another name there means the
# directory is someone else's.
LOCK_NAME = "monitor.lock"
SOCKET_NAMES = ("control.sock", "events.sock")
PIPE_NAME = "pipe"
OWN_NAMES = (LOCK_NAME, *SOCKET_NAMES, PIPE_NAME)
_CREATED = "created"  # second line of the lock file: busted made the directory


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


_HINT = "Give a new path for busted to create (e.g. /run/busted), or an empty directory " \
        "owned by root that only root can change."


class RuntimeDir:
    """Creates (or checks), locks, and cleans the runtime directory of one supervisor."""

    def __init__(self, root: Path, accounts: Accounts | None = None) -> None:
        self.root = Path(root)
        self.endpoints = Endpoints(self.root)
        self.accounts = accounts or Accounts.lookup()
        self.created = False  # busted made the directory: it goes on a clean exit
        self._lock_fd: int | None = None
        if len(str(self.root / "pipe" / "identity.sock")) > 100:
            # ipc:// paths are unix socket paths, limited to ~107 bytes.
            raise RuntimeDirError(
                f"runtime directory path is too long for unix sockets: {self.root}",
                "Use a shorter path with --runtime-dir (e.g. /run/busted or /tmp/bx).",
            )

    # --- set-up --------------------------------------------------------------------
    def prepare(self) -> None:
        """Create or check the directory, take the lock, replace a killed run's leftovers."""
        old_umask = os.umask(0o077)
        try:
            self._claim_root()
            self._take_lock()
            self._remove_leftovers()
            self._make_pipe()
        except BaseException:
            if self._lock_fd is not None:  # refused after all: let the next one try
                os.close(self._lock_fd)
                self._lock_fd = None
            raise
        finally:
            os.umask(old_umask)

    def _refuse(self, reason: str, hint: str = _HINT) -> RuntimeDirError:
        return RuntimeDirError(f"refusing --runtime-dir {self.root}: {reason}.", hint)

    def _claim_root(self) -> None:
        reason = unsafe_path(self.root)
        if reason:
            raise self._refuse(reason)
        try:
            os.mkdir(self.root, 0o700)
            self.created = True
        except FileExistsError:
            pass
        except PermissionError as exc:
            raise PrivilegeError(
                f"cannot create the runtime directory {self.root}: permission denied.",
                "Run as root (sudo busted monitor) or pick a directory you own with "
                "--runtime-dir.",
            ) from exc
        except OSError as exc:
            raise RuntimeDirError(f"cannot create {self.root}: {exc.strerror}.") from exc
        fd = self._open_dir(self.root)
        try:
            if self.created:
                # Ours: hand it to the stream group (its members reach events.sock).
                if self.accounts.stream_gid is not None:
                    os.fchown(fd, -1, self.accounts.stream_gid)
                os.fchmod(fd, 0o750)
            else:
                self._check_existing(os.fstat(fd))
        finally:
            os.close(fd)

    def _open_dir(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refuse(f"{path} is not a plain directory (a symlink or a file)") \
                    from exc
            raise RuntimeDirError(f"cannot open {path}: {exc.strerror}.") from exc

    def _check_existing(self, st: os.stat_result) -> None:
        """An existing directory is used as it is, never changed: it must be ours, closed
        to others, and hold nothing but what an earlier busted left."""
        if st.st_uid != os.geteuid():
            raise self._refuse(f"it belongs to uid {st.st_uid}, not to uid {os.geteuid()}")
        if others_can_change(st):
            raise self._refuse(
                f"other users can change it (mode {stat.S_IMODE(st.st_mode):04o})",
                f"Close it to others (chmod go-w {self.root}), or give a new path for "
                "busted to create (e.g. /run/busted).")
        foreign = sorted(set(os.listdir(self.root)) - set(OWN_NAMES))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise self._refuse(f"it already holds files busted did not create ({shown})")

    def _take_lock(self) -> None:
        path = self.endpoints.lock_file
        for _ in range(5):
            fd = open_private(path, "the lock file", flags=os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                other = os.pread(fd, 32, 0).decode(errors="replace").split("\n")[0] or "?"
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    raise RuntimeDirError(
                        f"another busted monitor (pid {other}) is already running with "
                        f"runtime directory {self.root}.",
                        "Stop it first with `sudo busted stop`, or use another --runtime-dir.",
                    ) from exc
                raise
            # A monitor that was exiting may have removed the file we locked: retry.
            try:
                if os.lstat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise RuntimeDirError(f"could not take the lock {path}: it keeps being replaced.")
        earlier = os.pread(fd, 64, 0).decode(errors="replace").split("\n")
        if len(earlier) > 1 and earlier[1] == _CREATED:
            self.created = True  # a killed run made it: still busted's to remove
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{_CREATED if self.created else 'existing'}\n".encode(), 0)
        self._lock_fd = fd

    def _remove_leftovers(self) -> None:
        """Sockets and pipe/ of a killed run: we hold the lock, so nothing uses them."""
        for name in SOCKET_NAMES:
            self._remove_socket(self.root / name)
        pipe = self.endpoints.pipe
        try:
            st = os.lstat(pipe)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise self._refuse(f"{pipe} is not a directory busted made")
        for entry in os.listdir(pipe):
            self._remove_socket(pipe / entry)
        os.rmdir(pipe)

    def _remove_socket(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise self._refuse(f"{path} is not a socket busted made")
        os.unlink(path)
        log.debug("removed the stale socket %s", path)

    def _make_pipe(self) -> None:
        """pipe/ belongs to root; the worker account may only pass through it to its
        sockets (it creates nothing there: workers bind before dropping privileges)."""
        os.mkdir(self.endpoints.pipe, 0o700)
        fd = self._open_dir(self.endpoints.pipe)
        try:
            if os.geteuid() == 0 and self.accounts.worker_gid is not None:
                os.fchown(fd, -1, self.accounts.worker_gid)
                os.fchmod(fd, 0o710)
        finally:
            os.close(fd)

    # --- sockets -------------------------------------------------------------------
    def bind(self, sock: zmq.Socket, endpoint: str, kind: str) -> None:
        """Bind an ipc socket with the owner, mode and allowed peers of its ``kind``:

        - "control": only our own user (root) may connect; 0600;
        - "pipe": our user and the worker account; 0600, owned by the worker account;
        - "stream": our user and members of the stream group; 0660, group ``busted``.

        Filters add up on a socket and each bind keeps those set before it: bind a
        socket's most restricted endpoint first (the supervisor binds control, then pipe).
        """
        me = os.geteuid()
        acc = self.accounts
        if kind == "control":
            ipc.bind_restricted(sock, endpoint, mode=0o600, allow_uids=(me,))
        elif kind == "pipe":
            worker = () if acc.worker_uid is None or me != 0 else (acc.worker_uid,)
            ipc.bind_restricted(sock, endpoint, mode=0o600, allow_uids=(me, *worker),
                                uid=acc.worker_uid if worker else -1)
        elif kind == "stream":
            group = () if acc.stream_gid is None or me != 0 else (acc.stream_gid,)
            ipc.bind_restricted(sock, endpoint, mode=0o660, allow_uids=(me,),
                                allow_gids=group, gid=group[0] if group else -1)
        else:
            raise ValueError(f"unknown socket kind {kind!r}")

    # --- clean-up ------------------------------------------------------------------
    def release(self) -> None:
        """Remove what we created (sockets, pipe/, the lock, the directory if we made
        it) and drop the lock. Called once the workers are gone."""
        if self._lock_fd is None:
            return
        try:
            self._remove_leftovers()
            os.unlink(self.endpoints.lock_file)  # still locked: nobody takes it meanwhile
        except (OSError, RuntimeDirError) as exc:
            log.warning("could not clean up %s: %s", self.root, exc)
        os.close(self._lock_fd)
        self._lock_fd = None
        if self.created:
            try:
                os.rmdir(self.root)
            except OSError as exc:  # a new monitor already uses it, or someone added a file
                log.debug("kept %s: %s", self.root, exc.strerror)


def read_lock_pid(root: Path) -> int | None:
    """The pid written in the lock file, if any (for messages and `busted stop`)."""
    try:
        return int((Path(root) / LOCK_NAME).read_text().split("\n")[0])
    except (OSError, ValueError):
        return None
