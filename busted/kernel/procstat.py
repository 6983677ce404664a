"""What /proc/<pid>/stat says about a process: its parent and its controlling terminal.

The command name (field 2) may contain spaces and parentheses, so the fields are read
after the LAST ')'. Returned lists start at field 3 (state): index 1 is the parent pid,
index 4 the controlling terminal (``tty_nr``, 0 when there is none).
"""

from __future__ import annotations

_STATE = 0
_PPID = 1
_TTY_NR = 4


def stat_fields(pid: int, proc: str = "/proc") -> list[str] | None:
    """Fields 3.. of the stat line, or None when the process is gone."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def parent_of(pid: int, proc: str = "/proc") -> int | None:
    fields = stat_fields(pid, proc)
    if fields is None or len(fields) <= _PPID:
        return None
    return int(fields[_PPID])


def has_terminal(pid: int, proc: str = "/proc") -> bool | None:
    """Whether the process has a controlling terminal (None: it is gone).

    A process with one may be in a shell's foreground job: stopping it would hand the
    terminal back to the shell ("[1]+ Stopped"), so enforcement never stops it.
    """
    fields = stat_fields(pid, proc)
    if fields is None or len(fields) <= _TTY_NR:
        return None
    return fields[_TTY_NR] != "0"


def is_stopped(pid: int, proc: str = "/proc") -> bool | None:
    """Whether the process is stopped by a signal or a tracer (None: it is gone)."""
    fields = stat_fields(pid, proc)
    if not fields:
        return None
    return fields[_STATE] in ("T", "t")
