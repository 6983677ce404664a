"""The active policy of a worker, and its hot reload when policy files change.

:class:`LivePolicy` owns the current :class:`~busted.policy.decision.Decider` and a
:class:`Watcher` over the policy directories. ``poll(now)`` is cheap (a few ``stat``
calls, at most every :data:`POLL_INTERVAL_S`); when the files changed and then stayed
unchanged for one more poll (so a file caught half-written is not loaded), the whole
set is loaded again. A set that fails to load leaves the previous one active and logs
each error with file:line:col — once per broken state, not on every poll.

All of it runs on the worker's one thread: regorus engines must stay on the thread that
created them, and a reload builds the new engines right there.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from busted.policy import loader, perms
from busted.policy.decision import Decider, build_decider
from busted.policy.engine import PolicyLoadError

log = logging.getLogger("busted.policy")

POLL_INTERVAL_S = 0.25  # with the settle poll, an edit is live within ~0.5 s (goal: 2 s)

# (path, mtime_ns, size, inode, uid, mode) per file, and per policy directory without
# its mtime (files come and go there; the files themselves are listed). Owner and mode
# are in so that fixing refused permissions (busted.policy.perms) brings the reload.
Snapshot = tuple[tuple[str, int, int, int, int, int], ...]


class Watcher:
    """Tells when the policy files of some directories changed (added, edited, removed)."""

    def __init__(self, directories: Sequence[Path]) -> None:
        self.directories = [Path(d) for d in directories]
        self.current = self.snapshot()

    def snapshot(self) -> Snapshot:
        entries = []
        for path in [*self.directories, *loader.watched_files(self.directories)]:
            try:
                st = os.stat(path)
            except OSError:  # removed between listing and stat: the next poll sees it
                continue
            changes = (0, 0) if stat.S_ISDIR(st.st_mode) else (st.st_mtime_ns, st.st_size)
            entries.append((str(path), *changes, st.st_ino, st.st_uid, st.st_mode))
        return tuple(entries)


class LivePolicy:
    """The policy set a worker evaluates with, reloaded when its files change."""

    def __init__(
        self,
        directories: Sequence[Path | str] = (),
        rules: Sequence[str] = (),
        on_error: str = "allow",
        *,
        prefer_vm: bool = True,
        strict_perms: bool = False,
    ) -> None:
        self.directories = [Path(d) for d in directories]
        # A root monitor's policy must be root's alone (see busted.policy.perms); decided
        # at start, since the worker reloads after switching to the busted account.
        self.strict_perms = strict_perms
        self.rules = list(rules)
        self.on_error = on_error
        self.prefer_vm = prefer_vm
        self.watcher = Watcher(self.directories)
        self.policy_set = loader.PolicySet()
        # Raises PolicyLoadError: a broken policy at start-up is the user's to fix.
        self.decider: Decider = self._load()
        self.reloads = 0
        self.reload_errors = 0
        self.last_error = ""
        self._next_poll = 0.0
        self._pending: Snapshot | None = None  # changed files waiting to settle
        self._failed: Snapshot | None = None  # a state we already reported as broken

    def _load(self) -> Decider:
        if self.strict_perms:
            perms.check(self.directories)  # before anything of theirs is read
        policy_set = loader.load(self.directories, self.rules)
        if self.strict_perms:
            perms.check(self.directories, policy_set.files)  # and what was read
        decider = build_decider(policy_set, self.on_error, prefer_vm=self.prefer_vm)
        self.policy_set = policy_set
        return decider

    def describe(self) -> str:
        engine = "VM" if self.decider.policy.uses_vm else "interpreter"
        files = len(self.policy_set.modules)
        return f"{files} policy module(s), {engine}"

    def poll(self, now: float) -> bool:
        """Reload if the files changed and settled; True when a new policy is active."""
        if not self.directories or now < self._next_poll:
            return False
        self._next_poll = now + POLL_INTERVAL_S
        snapshot = self.watcher.snapshot()
        if snapshot == self.watcher.current or snapshot == self._failed:
            self._pending = None  # nothing new (a broken state is not retried until edited)
            return False
        if snapshot != self._pending:
            self._pending = snapshot  # wait one more poll: the editor may still be writing
            return False
        self._pending = None
        return self._reload(snapshot)

    def _reload(self, snapshot: Snapshot) -> bool:
        try:
            decider = self._load()
        except PolicyLoadError as exc:
            self.last_error = exc.message
            if snapshot != self._failed:
                self.reload_errors += 1
                self._failed = snapshot
                for problem in exc.problems:
                    log.error("policy reload failed, keeping the previous policy: %s", problem)
            return False
        self.watcher.current = snapshot
        self.decider = decider
        self.reloads += 1
        self.last_error = ""
        self._failed = None
        log.info("policy reloaded: %s", self.describe())
        return True
