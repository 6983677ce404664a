"""What the enforcer needs from the kernel, as typed interfaces.

The :class:`~busted.enforce.enforcer.Enforcer` decides; these three parts act in the
kernel or outlive the capture worker. Each is a Protocol so that the real parts
(:class:`busted.sources.kernel.KernelSource`,
:class:`busted.enforce.connect_blocker.ConnectBlocker`,
:class:`busted.enforce.watchdog.Watchdog`) and the unit tests' fakes are checked
against one list of methods, and the enforcer never guesses what it was given.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class HoldHooks(Protocol):
    """The hold side of the kernel source (the TLS write probe's maps)."""

    def kill_on_write(self, pid: int) -> None:
        """Kill ``pid`` in the kernel at its next TLS write (it was denied)."""

    def set_holding(self, on: bool) -> None:
        """Start or stop holding writes (someone is there to answer, or not)."""

    def held_pids(self) -> dict[int, int]:
        """Processes the probe stopped and the enforcer has not finished with:
        pid -> kernel time (ns) of the stop."""

    def unhold(self, pid: int) -> None:
        """The enforcer resumed or killed ``pid``: forget the kernel's note of it."""

    def held_map_fd(self) -> int:
        """The fd of the ``held_pids`` map for the watchdog (-1: writes are not held)."""

    def switch_map_fd(self) -> int:
        """The fd of the ``hold_switch`` map for the watchdog (-1: writes are not held)."""


@runtime_checkable
class Blocker(Protocol):
    """Refuses new connects to denied destinations (the cgroup connect programs)."""

    def start(self) -> None:
        """Load and attach; raise a BustedError with a clear message on failure."""

    def block(self, ip: str, port: int = 0) -> None:
        """Refuse connects to ``ip`` on ``port`` (0: every port)."""

    def unblock(self, ip: str, port: int = 0) -> None:
        """Allow them again."""

    def poll(self, timeout_s: float = 0.0) -> list[dict[str, Any]]:
        """ENFORCEMENT events for the connects refused (or reported) since the last call."""

    def close(self) -> None:
        """Detach: nothing stays blocked."""


@runtime_checkable
class HoldWatchdog(Protocol):
    """The process that resumes (or kills) held processes if the capture worker dies."""

    def hold(self, pid: int, deadline: float) -> None:
        """``pid`` is held until ``deadline`` (unix seconds)."""

    def done(self, pid: int) -> None:
        """``pid`` was resumed or killed."""

    def flush(self) -> None:
        """Send what ``hold`` and ``done`` said since the last flush (they may wait for it)."""

    def close(self) -> None:
        """Release everything still held, then let the watchdog exit."""
