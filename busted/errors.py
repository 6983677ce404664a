"""The exception tree. Every failure a user can cause or meet is a :class:`BustedError`
with a plain-words message and, where there is one, what to do next (``hint``).

The CLI prints these without a traceback; anything else escaping is a bug.
Foreign errors (zmq, OSError, bcc, regorus) are translated at the boundary with
``raise BustedError(...) from exc`` so the cause stays visible with ``--debug``; bcc's
bare exceptions at one place, :func:`busted.sources.kernel.bcc_errors`.

The tree::

    BustedError
      UsageError, PrivilegeError, KernelError, RuntimeDirError, ConnectError,
      UnsafePathError, DisplayError, BenchError, SpoolError, ModelError
      PolicyError
        PolicyLoadError, EvaluationError
"""

from __future__ import annotations

from collections.abc import Sequence


class BustedError(Exception):
    """Base of every expected failure. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class UsageError(BustedError):
    """Bad flags or arguments (what click does not catch itself)."""

    exit_code = 2


class PrivilegeError(BustedError):
    """The command needs root (or a group membership) that the caller does not have."""


class KernelError(BustedError):
    """The running kernel lacks something a feature needs, or refused a BPF program."""


class RuntimeDirError(BustedError):
    """The runtime directory is unsafe, busy (another monitor), or cannot be created."""


class PolicyError(BustedError):
    """A policy could not be parsed, loaded or evaluated."""


class PolicyLoadError(PolicyError):
    """One or more policy sources could not be loaded; ``problems`` lists each one
    (:class:`busted.policy.engine.Problem`: file, line, column, reason)."""

    def __init__(self, problems: Sequence[object], hint: str = "") -> None:
        self.problems = tuple(problems)
        lines = [str(p) for p in self.problems]
        message = lines[0] if len(lines) == 1 else f"{len(lines)} policy errors:\n  " + "\n  ".join(lines)
        super().__init__(
            message, hint or "Fix the policy, then check it with `busted policy check --dir DIR`."
        )


class EvaluationError(PolicyError):
    """Evaluating the policy set against one input failed (the event is marked, not lost)."""


class ConnectError(BustedError):
    """A client (status, stop, ui) could not reach the daemon."""


class DisplayError(BustedError):
    """No graphical display to open a window on (``busted ui``)."""


class BenchError(BustedError):
    """The benchmark could not run (no monitor, server or client failed)."""


class SpoolError(BustedError):
    """The spool directory cannot be used (busy, unsafe, or not writable)."""


class UnsafePathError(BustedError):
    """A file or directory root would write or trust can be changed by another user."""


class ModelError(BustedError):
    """A behavioural model file (busted.ml) is missing, corrupt or of another version."""
