"""The exception tree. Every failure a user can cause or meet is a :class:`BustedError`
with a plain-words message and, where there is one, what to do next (``hint``).

The CLI prints these without a traceback; anything else escaping is a bug.
Foreign errors (zmq, OSError, bcc, regorus) are translated at the boundary with
``raise BustedError(...) from exc`` so the cause stays visible with ``--debug``.
"""

from __future__ import annotations


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


class ConnectError(BustedError):
    """A client (status, stop, ui) could not reach the daemon."""


class UnsafePathError(BustedError):
    """A file or directory root would write or trust can be changed by another user."""


class ModelError(BustedError):
    """A behavioural model file (busted.ml) is missing, corrupt or of another version."""
