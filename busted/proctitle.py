"""Name a busted process after its role, so ``ps``, ``top`` and ``pgrep`` tell them apart.

Worker processes are started by ``multiprocessing`` (spawn) and the watchdog by
``python -m``; without this every one of them shows as ``python3 -c from
multiprocessing.spawn import ...``. Two names are set:

- the kernel's short name (``comm``, 15 bytes: ``busted-capture``) with
  ``prctl(PR_SET_NAME)``, which ``top``, ``ps -o comm`` and ``pgrep`` show;
- the command line (``busted: capture``), which ``ps aux`` and ``top -c`` show, by
  writing the title over the process's original argument area (whose bounds the kernel
  gives in ``/proc/self/stat``). The title always fits: the original command line of a
  spawned worker is far longer, and a title is cut rather than ever written past it.

Both are best effort: a failure leaves the old names and is never an error.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("busted.proctitle")

_PR_SET_NAME = 15
_COMM_MAX = 15  # bytes of a task name, without its NUL
# Fields of /proc/PID/stat after the ")" ending the command name: field 48 (arg_start)
# and 49 (arg_end) of proc(5), counted from field 3.
_ARG_START, _ARG_END = 48 - 3, 49 - 3


def comm_name(role: str) -> str:
    """The kernel name of a role's process (``busted-classify`` is exactly 15 bytes)."""
    return f"busted-{role}"[:_COMM_MAX]


def title(role: str) -> str:
    return f"busted: {role}"


def set_process_name(role: str) -> None:
    """Name this process after ``role`` in comm and cmdline (best effort)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(comm_name(role).encode()), 0, 0, 0)
        _overwrite_args(title(role).encode())
    except (OSError, ValueError, AttributeError) as exc:  # not Linux, or /proc hidden
        log.debug("could not name this process %r: %s", role, exc)


def _overwrite_args(text: bytes) -> None:
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[_ARG_START]), int(fields[_ARG_END])
    size = end - start
    if start <= 0 or size < 2:
        return
    # A NUL as the area's last byte would make the kernel show the whole area, our
    # title followed by hundreds of empty arguments. Anything else there tells it the
    # program rewrote its title (as setproctitle(3) does): it shows the text up to the
    # first NUL, which is ours.
    text = text[: size - 2]
    ctypes.memset(start, 0, size)
    ctypes.memmove(start, text, len(text))
    ctypes.memset(end - 1, 0x20, 1)
