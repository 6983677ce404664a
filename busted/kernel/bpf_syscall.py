"""The few bpf(2) calls busted makes itself, outside bcc (x86-64).

- :func:`prog_run_stats`: the kernel's run counters of a loaded program (what the
  probes cost, for ``busted bench probes``);
- :func:`map_u32_keys` / :func:`map_delete_u32`: the keys of a hash map keyed by a u32
  (the ``held_pids`` map the hold watchdog inherits as a bare fd, with no bcc around);
- :func:`map_set_u32`: write a u32 value under a u32 key (the watchdog turns the
  probes' ``hold_switch`` off once capture is gone);
- :func:`link_uprobe_session`: attach a uprobe *session* program (one program at a
  call's entry and, if its entry run asks, at its return; Linux 6.10+), which bcc
  loads but cannot attach.
"""

from __future__ import annotations

import ctypes as ct
import os

_SYS_BPF = 321  # x86-64
_BPF_MAP_UPDATE_ELEM = 2
_BPF_MAP_DELETE_ELEM = 3
_BPF_MAP_GET_NEXT_KEY = 4
_BPF_OBJ_GET_INFO_BY_FD = 15
_BPF_LINK_CREATE = 28
BPF_TRACE_UPROBE_SESSION = 57  # enum bpf_attach_type (uapi, Linux 6.10+)
# offsets of run_time_ns / run_cnt in struct bpf_prog_info (uapi, stable since 5.1)
_RUN_TIME_AT, _RUN_CNT_AT = 192, 200
_MAX_KEYS = 65536


class _InfoAttr(ct.Structure):
    """The part of union bpf_attr that BPF_OBJ_GET_INFO_BY_FD uses."""

    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


class _MapAttr(ct.Structure):
    """The part of union bpf_attr that the map element commands use."""

    _fields_ = [("map_fd", ct.c_uint32), ("pad", ct.c_uint32), ("key", ct.c_uint64),
                ("value_or_next_key", ct.c_uint64), ("flags", ct.c_uint64)]


class _UprobeMultiLink(ct.Structure):
    """The part of union bpf_attr that BPF_LINK_CREATE uses, with its uprobe_multi member."""

    _fields_ = [("prog_fd", ct.c_uint32), ("target_fd", ct.c_uint32),
                ("attach_type", ct.c_uint32), ("flags", ct.c_uint32),
                ("path", ct.c_uint64), ("offsets", ct.c_uint64),
                ("ref_ctr_offsets", ct.c_uint64), ("cookies", ct.c_uint64),
                ("cnt", ct.c_uint32), ("multi_flags", ct.c_uint32), ("pid", ct.c_uint32),
                ("_rest", ct.c_uint32 * 8)]


def _syscall(cmd: int, attr: ct.Structure) -> int:
    """The bpf(2) return value; -errno on failure."""
    libc = ct.CDLL(None, use_errno=True)
    ret = libc.syscall(_SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr))
    return ret if ret >= 0 else -ct.get_errno()


def _bpf(cmd: int, attr: ct.Structure) -> bool:
    """True when the call succeeded."""
    return _syscall(cmd, attr) == 0


def link_uprobe_session(prog_fd: int, path: str, offset: int, pid: int = 0) -> int:
    """Attach a session program (loaded with expected attach type
    ``BPF_TRACE_UPROBE_SESSION``) at a file ``offset`` of ``path``, in every process
    (``pid`` 0) or one. Returns the link's fd (closing it detaches); raises OSError."""
    raw_path = ct.create_string_buffer(os.fsencode(path))
    offsets = (ct.c_uint64 * 1)(offset)
    attr = _UprobeMultiLink(prog_fd=prog_fd, attach_type=BPF_TRACE_UPROBE_SESSION,
                            path=ct.addressof(raw_path), offsets=ct.addressof(offsets), cnt=1,
                            pid=max(0, pid))
    fd = _syscall(_BPF_LINK_CREATE, attr)
    if fd < 0:
        raise OSError(-fd, f"uprobe session on {path}+{offset:#x}: {os.strerror(-fd)}")
    return fd


def prog_run_stats(fd: int) -> tuple[int, int] | None:
    """(runs, total ns) of a program since load, or None if the kernel says nothing."""
    info = (ct.c_ubyte * 256)()
    if not _bpf(_BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ct.sizeof(info), ct.addressof(info))):
        return None
    raw = bytes(info)
    run_ns = int.from_bytes(raw[_RUN_TIME_AT:_RUN_TIME_AT + 8], "little")
    runs = int.from_bytes(raw[_RUN_CNT_AT:_RUN_CNT_AT + 8], "little")
    return runs, run_ns


def map_u32_keys(map_fd: int) -> list[int]:
    """The keys of a hash map keyed by a u32."""
    keys: list[int] = []
    key, next_key = ct.c_uint32(0), ct.c_uint32(0)
    first = True
    while len(keys) < _MAX_KEYS:
        attr = _MapAttr(map_fd, 0, 0 if first else ct.addressof(key), ct.addressof(next_key), 0)
        if not _bpf(_BPF_MAP_GET_NEXT_KEY, attr):
            break  # ENOENT: no more keys
        keys.append(next_key.value)
        key.value = next_key.value
        first = False
    return keys


def map_delete_u32(map_fd: int, key: int) -> None:
    raw = ct.c_uint32(key)
    _bpf(_BPF_MAP_DELETE_ELEM, _MapAttr(map_fd, 0, ct.addressof(raw), 0, 0))


def map_set_u32(map_fd: int, key: int, value: int) -> bool:
    """map[key] = value for a map of u32 keys and u32 values; True on success."""
    raw_key, raw_value = ct.c_uint32(key), ct.c_uint32(value)
    return _bpf(_BPF_MAP_UPDATE_ELEM,
                _MapAttr(map_fd, 0, ct.addressof(raw_key), ct.addressof(raw_value), 0))
