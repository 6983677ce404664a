"""Who may change the policy of a root monitor (sshd's StrictModes, for Rego files).

The policy decides what is reported, what is blocked and, with ``--enforce``, which
processes are killed. A policy directory or file that a user other than root can
write — or that lies in a directory such a user can change — would hand that user the
policy of a root daemon. So when ``busted monitor`` runs as root, every policy
directory and file must belong to root and be closed to others, at start and at each
hot reload (a new file is checked before it is read). ``--insecure-policy-perms``
turns the check off.

"Closed to others" is :func:`busted.rootfiles.others_can_change` and
:func:`busted.rootfiles.unsafe_path`, judged for root (uid 0): the policy worker
reloads after switching to the ``busted`` account, whose own files must not pass.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from busted.policy.engine import PolicyLoadError
from busted.policy.loader import watched_files
from busted.rootfiles import others_can_change, unsafe_path

ROOT = 0
HINT = ("Make it root's alone (chown root: PATH; chmod go-w PATH), or run with "
        "--insecure-policy-perms if other users may change what busted blocks.")


class PolicyPermsError(PolicyLoadError):
    """A policy directory or file that a user other than root could change."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(problems, HINT)  # type: ignore[arg-type]  (plain sentences)


def problems(directories: Iterable[Path], files: Iterable[Path | str] = ()) -> list[str]:
    """One sentence per policy directory or file another user could change.

    ``files`` defaults to what the directories hold now (policies and data.json).
    """
    directories = [Path(d) for d in directories]
    found = [p for d in directories if (p := _problem(d, "policy directory"))]
    if found:  # the files in such a directory are refused with it
        return found
    return [p for f in list(files) or watched_files(directories)
            if (p := _problem(Path(f), "policy file"))]


def _problem(path: Path, what: str) -> str | None:
    reason = unsafe_path(path, trusted_uid=ROOT)
    if reason is None:
        try:
            st = os.stat(path)
        except OSError:
            return None  # gone since it was listed; the loader says so if it matters
        # The same rule for a file as for a directory: root's, written by root alone.
        if others_can_change(st, trusted_uid=ROOT):
            reason = f"it belongs to uid {st.st_uid}, not to root" if st.st_uid != ROOT \
                else f"other users may write it (mode {stat.S_IMODE(st.st_mode):04o})"
    return f"refusing the {what} {path}: {reason}." if reason else None


def check(directories: Iterable[Path], files: Iterable[Path | str] = ()) -> None:
    """Raise :class:`PolicyPermsError` if another user could change the policy."""
    found = problems(directories, files)
    if found:
        raise PolicyPermsError(found)
