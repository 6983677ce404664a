"""Paths that busted, running as root, writes to or trusts — and who else could change them.

Root follows whatever a path names at the moment it is opened. If another user can
change any directory on the way, that user decides what root writes to (a symlink
planted at ``/tmp/busted.jsonl`` pointing at ``/etc/shadow``), or what root reads as its
policy. So everything busted writes as root (``--output file:``, the summary, locks)
is opened here, and the runtime directory and policy files are judged with the same
rule:

- :func:`others_can_change` — THE predicate: a directory in which a user other than
  root (and other than us, when busted runs unprivileged) can add, remove or rename
  entries: it belongs to such a user, or its group or everyone may write it.
- :func:`unsafe_path` — walks from ``/`` to a path, following symlinks, and says which
  step another user could swap. A sticky directory that others may write (``/tmp``)
  is fine for entries owned by root or us: nobody else can rename or remove them.
- :func:`open_private` / :func:`write_private` — open with ``O_NOFOLLOW``; a new file
  is created ``0600`` with ``O_EXCL`` (so it is ours), an existing one must be a
  regular file of ours, with no other hard link, and not open to others.

Refusals are :class:`~busted.errors.UnsafePathError` with one plain sentence.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from pathlib import Path

from busted.errors import UnsafePathError

_MAX_SYMLINKS = 40  # as the kernel: more means a loop


def trusted_owner(uid: int, trusted_uid: int | None = None) -> bool:
    """Root, or the user busted runs as (its own files when run without root).

    ``trusted_uid`` replaces the latter: 0 judges for root in a process that switched
    to another account (the policy worker)."""
    return uid in (0, os.geteuid() if trusted_uid is None else trusted_uid)


def others_can_change(st: os.stat_result, trusted_uid: int | None = None) -> bool:
    """Whether a user other than root and us can add, remove or rename entries of the
    directory whose ``stat`` this is (group write counts: the group's members are other
    users)."""
    return not trusted_owner(st.st_uid, trusted_uid) or \
        bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _stays_put(dir_st: os.stat_result, entry_uid: int, trusted_uid: int | None) -> bool:
    """Whether an entry owned by ``entry_uid`` can be removed or renamed only by root or
    us: the directory is closed to others, or it is sticky (others may only touch their
    own entries there) and both it and the entry are trusted."""
    if not others_can_change(dir_st, trusted_uid):
        return True
    return bool(dir_st.st_mode & stat.S_ISVTX) and trusted_owner(dir_st.st_uid, trusted_uid) \
        and trusted_owner(entry_uid, trusted_uid)


def unsafe_path(path: str | os.PathLike, trusted_uid: int | None = None) -> str | None:
    """Why another user could change what ``path`` names, or None when nobody can.

    Every entry from ``/`` down to ``path`` (``path`` included if it exists; symlinks
    are followed and each link checked where it lies) must stay put in the directory
    holding it. A missing entry will be created by us, so only its directory counts.
    Errors other than a missing entry are left to the caller's own open or mkdir.
    """
    parts = deque(Path(os.path.abspath(path)).parts[1:])
    current = "/"
    links = 0
    while parts:
        name = parts.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        entry = os.path.join(current, name)
        try:
            dir_st = os.stat(current)
        except OSError:
            return None
        try:
            st = os.lstat(entry)
        except FileNotFoundError:
            if _stays_put(dir_st, os.geteuid() if trusted_uid is None else trusted_uid,
                          trusted_uid):
                return None
            return f"other users can change {current}, where it would be created"
        except OSError:
            return None
        if not _stays_put(dir_st, st.st_uid, trusted_uid):
            if stat.S_ISLNK(st.st_mode):
                return f"{entry} is a symbolic link in {current}, which other users can change"
            if not trusted_owner(st.st_uid, trusted_uid):
                return f"{entry} belongs to uid {st.st_uid}, in {current}, which other " \
                       "users can change"
            return f"other users can change {current}, which holds {entry}"
        if not stat.S_ISLNK(st.st_mode):
            current = entry
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            return f"{path} has too many symbolic links (a loop?)"
        target = Path(os.readlink(entry))
        if target.is_absolute():
            current = "/"
            parts.extendleft(reversed(target.parts[1:]))
        else:
            parts.extendleft(reversed(target.parts))
    return None


def foreign_file(st: os.stat_result) -> str | None:
    """Why an existing file may not be written by us, or None."""
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to uid {os.geteuid()}"
    if st.st_nlink > 1:
        return "it has other hard links"
    if st.st_mode & stat.S_IRWXO:
        return f"other users may read or write it (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


_HINT_PATH = "Choose a path in a directory only root can change (e.g. /var/log/busted/)."
_HINT_FILE = "Remove it, or choose another path."


def check_private(path: str | os.PathLike, what: str) -> None:
    """The refusals of :func:`open_private`, without creating anything (for flags
    checked before the monitor starts)."""
    path = os.path.abspath(path)
    reason = unsafe_path(path)
    if reason:
        raise UnsafePathError(f"refusing to write {what} {path}: {reason}.", _HINT_PATH)
    try:
        st = os.lstat(path)
    except OSError:
        return  # missing (created later), or an error the open will report
    problem = "it is a symbolic link" if stat.S_ISLNK(st.st_mode) else foreign_file(st)
    if problem:
        raise UnsafePathError(f"refusing to write {what} {path}: {problem}.", _HINT_FILE)


def open_private(path: str | os.PathLike, what: str, *, flags: int = os.O_WRONLY | os.O_APPEND,
                 truncate: bool = False) -> int:
    """Open a file root writes: created 0600 if missing, refused if another user could
    have planted or swapped it. ``what`` names it in messages ("the --output file").
    Returns the fd."""
    path = os.path.abspath(path)
    reason = unsafe_path(path)
    if reason:
        raise UnsafePathError(f"refusing to write {what} {path}: {reason}.", _HINT_PATH)
    base = flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: never wait on a FIFO
    try:
        fd = os.open(path, base | os.O_CREAT | os.O_EXCL, 0o600)  # new: made by us
    except FileExistsError:
        fd = -1
    except OSError as exc:
        raise UnsafePathError(f"cannot create {what} {path}: {exc.strerror}.") from exc
    if fd < 0:  # it exists: never follow it, and judge what was opened
        try:
            fd = os.open(path, base)
        except OSError as exc:
            problem = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise UnsafePathError(f"refusing to write {what} {path}: {problem}.",
                                  _HINT_FILE) from exc
        problem = foreign_file(os.fstat(fd))
        if problem:
            os.close(fd)
            raise UnsafePathError(f"refusing to write {what} {path}: {problem}.", _HINT_FILE)
    os.set_blocking(fd, True)
    if truncate:
        os.ftruncate(fd, 0)
    return fd


def write_private(path: str | os.PathLike, data: bytes, what: str) -> None:
    """Replace the contents of a file root writes (same rules as :func:`open_private`)."""
    fd = open_private(path, what, flags=os.O_WRONLY, truncate=True)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
