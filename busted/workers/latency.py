"""A shorter scheduler slice for the workers a held write waits on (``--enforce``).

A held write's process is stopped until capture and classify have both run: each is
woken by the one before and, on a busy host, waits for a CPU behind whatever runs
there. Linux's EEVDF scheduler (6.6+; a custom slice since 6.12) lets a thread ask for a
shorter slice: it gets the same share of the CPU, but an earlier deadline when it wakes
up, so it runs sooner, and short work like answering a hold is done within that slice.
No privilege is needed and nothing changes on older kernels (the request is refused or
ignored, and the default slice stays).

Set at a worker's start, before ZeroMQ starts its I/O threads: threads inherit it.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os

log = logging.getLogger("busted.worker")

HOLD_PATH_SLICE_NS = 100_000  # the shortest slice the kernel accepts (0.1 ms)
_SYS_SCHED_SETATTR = 314  # x86-64
_SYS_SCHED_GETATTR = 315


class _SchedAttr(ct.Structure):
    """struct sched_attr (uapi) up to the utilisation clamps."""

    _fields_ = [("size", ct.c_uint32), ("sched_policy", ct.c_uint32),
                ("sched_flags", ct.c_uint64), ("sched_nice", ct.c_int32),
                ("sched_priority", ct.c_uint32), ("sched_runtime", ct.c_uint64),
                ("sched_deadline", ct.c_uint64), ("sched_period", ct.c_uint64),
                ("util_min", ct.c_uint32), ("util_max", ct.c_uint32)]


def short_slice(slice_ns: int = HOLD_PATH_SLICE_NS) -> bool:
    """Ask for ``slice_ns`` as this thread's slice, keeping its policy and nice value.
    Returns whether the kernel took it."""
    try:
        libc = ct.CDLL(None, use_errno=True)
    except OSError:
        return False
    attr = _SchedAttr(size=ct.sizeof(_SchedAttr))
    if libc.syscall(_SYS_SCHED_GETATTR, 0, ct.byref(attr), ct.sizeof(attr), 0) != 0:
        return False
    if attr.sched_policy != 0:  # not SCHED_OTHER (a real-time policy set by the admin): keep it
        return False
    attr.size = ct.sizeof(_SchedAttr)
    attr.sched_nice = os.getpriority(os.PRIO_PROCESS, 0)
    attr.sched_runtime = slice_ns
    if libc.syscall(_SYS_SCHED_SETATTR, 0, ct.byref(attr), 0) != 0:
        log.debug("no custom scheduler slice: errno %d", ct.get_errno())
        return False
    return True
