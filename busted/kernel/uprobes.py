"""Attaching busted's uprobes: TLS write/read sites as uprobe sessions where the kernel
has them (Linux 6.10+), every other site as a classic uprobe or uretprobe.

**Sessions.** Every probed ``SSL_write``/``SSL_read`` call used to pay two traps: the
entry uprobe and the return probe it arms, also on the connections the classifier has
judged uninteresting (most of a host's TLS calls), where the return has nothing to do.
A *session* is one BPF program attached at a function that runs at the call's entry
and runs again at its return only when its entry run returned 0 (``tls_session`` in
``bpf/tls.bpf.c``): an uninteresting call then pays one trap. Measured on this VM
(``busted/bench/uprobe_session.py``, bench/README.md "What a return probe costs"): an
entry + return pair ~700 ns per call, a session whose entry skips the return ~510 ns.
bcc loads such a program (expected attach type ``BPF_TRACE_UPROBE_SESSION``) but cannot
attach it; :func:`busted.kernel.bpf_syscall.link_uprobe_session` does. Where loading or
linking is refused (an older kernel), the first refusal switches sessions off for the
run and the classic entry + return pair is attached instead: the same logic, the same
events. ``BUSTED_UPROBE_SESSIONS=off`` forces the classic pair.

**Classic probes, attached here rather than by bcc's ``attach_uprobe``.** The Python
binding of bcc 0.26 (Debian 12's python3-bpfcc) calls libbcc's ``bpf_attach_uprobe``
with six arguments where the library takes seven: the last, ``ref_ctr_offset`` (a
USDT semaphore's file offset), is whatever the stack holds. The kernel then increments
a "semaphore" at that offset of the probed file in every process mapping it (a
copy-on-write page each), and refuses any other probe at the same place whose offset
differs ("ref_ctr_offset mismatch" in the kernel log) — a session, or a second
monitor's probe. Here the call gets its seventh argument, 0.
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import os
import re
from typing import Any

from busted.kernel.bpf_syscall import BPF_TRACE_UPROBE_SESSION, link_uprobe_session
from busted.kernel.tls.elf import ElfError, ElfFile
from busted.kernel.tls.site import ProbeSite

log = logging.getLogger("busted.capture")

# entry program -> (its return program, the session program doing both)
SESSIONS = {
    "tls_write_ex_enter": ("tls_write_return", "tls_write_ex_session"),
    "tls_write_enter": ("tls_write_return", "tls_write_session"),
    "tls_read_ex_enter": ("tls_read_return", "tls_read_ex_session"),
    "tls_read_enter": ("tls_read_return", "tls_read_session"),
}
# what an older kernel answers when it does not know the attach type or the link
_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, 524}  # 524: ENOTSUPP


def pair_sites(sites: list[ProbeSite]) -> tuple[list[ProbeSite], list[ProbeSite]]:
    """Split a plan into the entry sites whose entry + return pair can become one
    session, and the other sites (their return probes left out of both lists)."""
    returns = {(s.addr, s.fn) for s in sites if s.ret}
    paired = [s for s in sites if not s.ret and s.fn in SESSIONS
              and (s.addr, SESSIONS[s.fn][0]) in returns]
    covered = {(s.addr, SESSIONS[s.fn][0]) for s in paired}
    rest = [s for s in sites
            if not (s in paired or (s.ret and (s.addr, s.fn) in covered))]
    return paired, rest


def classic_pair(site: ProbeSite) -> list[ProbeSite]:
    """The entry + return probes a session replaces (for a kernel without sessions)."""
    ret_fn = SESSIONS[site.fn][0]
    return [site, ProbeSite(site.path, ret_fn, site.sym, site.offset, site.addr, True, "")]


def file_offsets(path: str, addrs: set[int]) -> dict[int, int]:
    """The file offsets of virtual addresses of ``path`` (what the kernel probes), the
    file read once."""
    try:
        with ElfFile(path) as elf:
            offsets = {addr: elf.offset_of(addr) for addr in addrs}
    except (ElfError, OSError) as exc:
        raise OSError(errno.ENOENT, f"{path}: {exc}") from exc
    missing = [addr for addr, offset in offsets.items() if offset is None]
    if missing:
        raise OSError(errno.EINVAL, f"{missing[0]:#x} is in no loaded segment of {path}")
    return {addr: offset for addr, offset in offsets.items() if offset is not None}


class Uprobes:
    """The uprobes of one capture: attached through :meth:`attach` (a session where
    possible, else the classic probes), all detached by :meth:`close`."""

    def __init__(self, bpf: Any, sessions: bool | None = None) -> None:
        from bcc import BPF  # imported here: planning probes runs without bcc
        from bcc.libbcc import lib

        self.bpf = bpf
        self._kprobe_type = BPF.KPROBE
        self._lib = lib
        # lib["name"] is a function object of our own: bcc's shared one keeps its
        # six-argument signature for bcc's own callers
        self._attach_uprobe = lib["bpf_attach_uprobe"]
        self._attach_uprobe.restype = ct.c_int
        self._attach_uprobe.argtypes = [ct.c_int, ct.c_int, ct.c_char_p, ct.c_char_p,
                                        ct.c_ulonglong, ct.c_int, ct.c_uint32]
        if sessions is None:
            sessions = os.environ.get("BUSTED_UPROBE_SESSIONS", "on").lower() not in (
                "off", "0", "no")
        self.sessions = sessions
        self.why_no_sessions = "" if sessions else "switched off (BUSTED_UPROBE_SESSIONS=off)"
        self.session_count = 0
        self._links: list[int] = []
        self._events: dict[bytes, int] = {}  # classic probes: event name -> perf fd

    def attach(self, path: str, sites: list[ProbeSite], pids: tuple[int, ...]) -> tuple[int, list[str]]:
        """Attach a file's plan for each pid (-1: every process); returns (how many
        probes or sessions attached, one line per site that did not)."""
        paired, rest = pair_sites(sites)
        try:
            offsets = file_offsets(path, {site.addr for site in sites})
        except OSError as exc:
            return 0, [f"{site.describe()}: {exc}" for site in sites]
        attached, errors = 0, []
        for site in paired:
            for pid in pids:
                refused = ""
                try:
                    if self._session(path, site, offsets[site.addr], pid):
                        attached += 1
                        continue
                except OSError as exc:  # this site only: the classic pair may still go on
                    refused = f"{site.describe()} (session): {exc}"
                n, errs = self._classic(path, classic_pair(site), offsets, (pid,))
                if refused:
                    log.info("%s; probed with an entry and a return probe instead", refused)
                    errs = [refused, *errs] if errs else []
                attached, errors = attached + n, errors + errs
        n, errs = self._classic(path, rest, offsets, pids)
        return attached + n, errors + errs

    def _session(self, path: str, site: ProbeSite, offset: int, pid: int) -> bool:
        """Attach ``site`` as a session; False when sessions are off (attach the classic
        pair instead); OSError when this one site could not be attached."""
        if not self.sessions:
            return False
        try:
            prog = self.bpf.load_func(SESSIONS[site.fn][1].encode(), self._kprobe_type,
                                      attach_type=BPF_TRACE_UPROBE_SESSION)
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception on load
            self._no_sessions(f"the kernel refused the session program ({exc})")
            return False
        try:
            fd = link_uprobe_session(prog.fd, path, offset, pid)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED and not self._links:
                self._no_sessions(f"the kernel has no uprobe sessions ({exc.strerror})")
                return False
            raise
        self._links.append(fd)
        self.session_count += 1
        return True

    def _no_sessions(self, why: str) -> None:
        self.sessions = False
        self.why_no_sessions = why
        log.info("uprobe sessions not used: %s; TLS calls get an entry and a return probe",
                 why)

    def _classic(self, path: str, sites: list[ProbeSite], offsets: dict[int, int],
                 pids: tuple[int, ...]) -> tuple[int, list[str]]:
        attached, errors = 0, []
        for site in sites:
            for pid in pids:
                try:
                    self._uprobe(path, site, offsets[site.addr], pid)
                    attached += 1
                except OSError as exc:  # one probe that did not attach: noted, not fatal
                    errors.append(f"{site.describe()}: {exc}")
                    log.debug("attach failed: %s: %s", site.describe(), exc)
        return attached, errors

    def _uprobe(self, path: str, site: ProbeSite, offset: int, pid: int) -> None:
        try:
            prog = self.bpf.load_func(site.fn.encode(), self._kprobe_type)
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception on load
            raise OSError(errno.EINVAL, f"could not load {site.fn}: {exc}") from exc
        kind = b"r" if site.ret else b"p"
        event = b"busted_%d_%s_%s_0x%x_%d" % (
            os.getpid(), kind, re.sub(rb"[^A-Za-z0-9_]", b"_", os.fsencode(path))[-96:],
            offset, max(pid, 0))
        fd = self._attach_uprobe(prog.fd, int(site.ret), event, os.fsencode(path), offset,
                                 pid, 0)
        if fd < 0:
            raise OSError(-fd if fd < -1 else errno.EINVAL,
                          f"the kernel refused a {'uretprobe' if site.ret else 'uprobe'} at "
                          f"{path}+{offset:#x} (another tool probing the same place with a "
                          f"USDT counter? see the kernel log)")
        self._events[event] = fd

    @property
    def count(self) -> int:
        return len(self._events) + len(self._links)

    def close(self) -> None:
        """Detach everything, several at a time: one by one takes ~4 s for ~50 probes on
        this VM (each release waits for the kernel); in parallel ~2.5 s."""
        from concurrent.futures import ThreadPoolExecutor

        links, self._links = self._links, []
        events, self._events = self._events, {}

        def detach(item: tuple[bytes, int]) -> None:
            event, fd = item
            if self._lib.bpf_close_perf_event_fd(fd) < 0:
                log.debug("detach %s failed", event)
            self._lib.bpf_detach_uprobe(event)

        def unlink(fd: int) -> None:
            try:
                os.close(fd)
            except OSError:
                pass

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(detach, events.items()))
            list(pool.map(unlink, links))
