"""Refusing connects to blocked destinations (``bpf/enforce.bpf.c``), for the enforcer.

Two cgroup ``connect4``/``connect6`` programs, attached to the root of the cgroup v2
hierarchy, look every new connection of the host up in a deny map the enforcer fills
(:meth:`ConnectBlocker.block`); a refused (or, in a dry run, reported) connect comes
back through a ring buffer as an ENFORCEMENT event. This is enforcement, not capture:
it lives apart from :mod:`busted.sources.kernel`, which only observes.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import os
import time
from typing import Any

from busted.errors import KernelError, PrivilegeError
from busted.kernel.records import BlockRec, DstKey
from busted.sources.kernel import BPF_DIR, bcc_errors

ENFORCE_PROGRAM = "enforce.bpf.c"


def cgroup2_root(mounts: str = "/proc/self/mounts") -> str:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on
    hybrid systems such as this one)."""
    with open(mounts) as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return parts[1]
    raise KernelError(
        "No cgroup v2 hierarchy is mounted, which blocking connections needs.",
        "Mount one: sudo mount -t cgroup2 none /sys/fs/cgroup/unified",
    )


class ConnectBlocker:
    """Refuses new connections to denied destinations for every process on the host.

    The programs are attached through BPF links, which the kernel drops when this
    process exits or crashes: a dead monitor never leaves destinations blocked.
    ``poll()`` returns an ENFORCEMENT event per refused connect.
    """

    def __init__(self, cgroup_path: str | None = None, report_only: bool = False) -> None:
        self.cgroup_path = cgroup_path
        self.report_only = report_only
        self._bpf: Any = None
        self._link_fds: list[int] = []
        self._cgroup_fd = -1
        self._out: list[dict[str, Any]] = []

    def start(self) -> None:
        if os.geteuid() != 0:
            raise PrivilegeError("Blocking connections needs root (it attaches BPF programs "
                                 "to the cgroup hierarchy).", "Run it with sudo.")
        from bcc import BPF, BPFAttachType

        text = (BPF_DIR / ENFORCE_PROGRAM).read_text()
        with bcc_errors("The connect-blocking program did not load ({exc}).",
                        "Run `busted doctor` to check headers and cgroup v2."):
            self._bpf = BPF(text=text.encode())
        libbpf = ct.CDLL("libbpf.so.1", use_errno=True)
        self._cgroup_fd = os.open(self.cgroup_path or cgroup2_root(), os.O_RDONLY)
        for name, kind in (("block_connect4", BPFAttachType.CGROUP_INET4_CONNECT),
                           ("block_connect6", BPFAttachType.CGROUP_INET6_CONNECT)):
            fn = self._bpf.load_func(name.encode(), BPF.CGROUP_SOCK_ADDR, attach_type=kind)
            fd = libbpf.bpf_link_create(fn.fd, self._cgroup_fd, int(kind), None)
            if fd < 0:
                self.close()
                raise KernelError(f"The kernel refused to attach {name} to the cgroup "
                                  f"hierarchy ({os.strerror(-fd)}).",
                                  "Run `busted doctor`: it reports cgroup v2 and BPF support.")
            self._link_fds.append(fd)
        if self.report_only:
            self._bpf[b"enforce_mode"][ct.c_int(0)] = ct.c_uint32(1)
        self._bpf[b"enforce_events"].open_ring_buffer(self._on_record)

    @staticmethod
    def _key(ip: str, port: int) -> DstKey:
        addr = ipaddress.ip_address(ip)
        key = DstKey()
        key.family = 2 if addr.version == 4 else 10
        key.port = port
        packed = addr.packed
        for i, b in enumerate(packed):
            key.addr[i] = b
        return key

    def block(self, ip: str, port: int = 0) -> None:
        """Refuse connects to ``ip`` (on ``port``, or on every port when 0)."""
        self._bpf[b"blocked"][self._key(ip, port)] = ct.c_uint8(1)

    def unblock(self, ip: str, port: int = 0) -> None:
        try:
            del self._bpf[b"blocked"][self._key(ip, port)]
        except KeyError:
            pass

    def _on_record(self, _ctx: Any, data: Any, size: int) -> None:
        rec = ct.cast(data, ct.POINTER(BlockRec)).contents
        length = 4 if rec.family == 2 else 16
        self._out.append({
            "event_type": "ENFORCEMENT", "policy": "deny",
            "action": "blocked-connect" if rec.refused else "would-block-connect",
            "timestamp": time.time(), "pid": rec.pid, "tid": rec.pid, "uid": rec.uid,
            "process_name": rec.comm.decode(errors="replace"),
            "dst_ip": str(ipaddress.ip_address(bytes(rec.addr[:length]))),
            "dst_port": rec.port,
        })

    def poll(self, timeout_s: float = 0.0) -> list[dict[str, Any]]:
        self._bpf.ring_buffer_poll(max(0, int(timeout_s * 1000)))
        out, self._out = self._out, []
        return out

    def close(self) -> None:
        for fd in self._link_fds:  # closing the link detaches the program
            os.close(fd)
        self._link_fds = []
        if self._cgroup_fd >= 0:
            os.close(self._cgroup_fd)
            self._cgroup_fd = -1
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
