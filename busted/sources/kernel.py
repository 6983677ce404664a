"""The kernel event source: bcc programs from ``bpf/`` -> schema events.

The only capture module that imports bcc (enforcement's cgroup programs load theirs in
:mod:`busted.enforce.connect_blocker`). ``start()`` compiles ``bpf/busted.h`` and
the ``bpf/*.bpf.c`` programs as one text (shared maps, one ring buffer), attaches the
tracepoints (connections, DNS, plain-text ports, exec) and the OpenSSL uprobes, and
returns once every probe is attached. ``poll()`` drains the ring buffer through
:class:`busted.kernel.tracker.Tracker`, which joins chunks and connection facts into
events. New processes that run OpenSSL from a file not yet probed are probed while
they start: a fresh executable carrying OpenSSL (node) from the exec tracepoint, a
private libssl copy from the loader's openat() of it, before it is even mapped; a full
/proc sweep every 30 s catches the rest.

Wake-ups: the ring wakes this consumer for writes and exec/open records, not for most
streamed reads (each wake-up is an interrupt charged to the traced thread), so
``poll()`` consumes whatever is in the ring after its wait.

Sizes and filters reach the C code as ``-D`` cflags only; :func:`dump_bpf` prints both.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from busted import messages
from busted.config import MAX_COPY_LIMIT, PEEK_COPY_LIMIT, MonitorConfig
from busted.errors import BustedError, KernelError, PrivilegeError
from busted.kernel import bpf_syscall, features, memtrim, procstat, records, tls, uprobes
from busted.kernel.blindspots import BlindSpots, socket_bytes_sent
from busted.kernel.tls import openssl as libssl
from busted.kernel.tracker import Tracker

log = logging.getLogger("busted.capture.kernel")

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
HEADER = "busted.h"
# the TLS stacks add theirs (busted.kernel.tls.bpf_programs)
BASE_PROGRAMS = ("connections.bpf.c", "dns.bpf.c", "plaintext.bpf.c")
CHUNK_SIZE = 16 * 1024  # per ring record; fits the per-cpu scratch (< 32 KiB)
MAX_PLAIN_PORTS = 8
# Rescan a newly exec'd process's mappings at these ages (s): shared libraries are
# mapped by the dynamic loader after exec, dlopen'd ones later still.
RESCAN_AFTER_S = (0.05, 0.5, 2.0)
IGNORE_REFRESH_S = 5.0
# A full /proc sweep (~40 ms with the per-file cache) catches libraries dlopen'd long
# after exec; the exec-time rescans catch everything else within 2 s.
FULL_RESCAN_S = 30.0
# A libssl copy being written is looked at again at these ages (s): copying ~5 MB takes
# milliseconds, and the process that made it usually loads it right after.
COPY_RETRY_AFTER_S = (0.005, 0.02, 0.1, 0.5)
# libbpf drains the ring until it is empty; under a sustained flood that never happens
# and the capture loop would stop heart-beating. Past this many records per poll the
# callback returns -1, which ends the batch (the record itself is already handled).
MAX_RECORDS_PER_POLL = 8192


@contextmanager
def bcc_errors(message: str, hint: str) -> Iterator[None]:
    """The one place where bcc's bare exceptions become a :class:`KernelError`.

    bcc raises plain ``Exception`` for compile errors, verifier rejections and failed
    attaches; ``message`` says what was being loaded, with ``{exc}`` where bcc's own
    words go. Busted's own errors pass through unchanged.
    """
    try:
        yield
    except BustedError:
        raise
    except Exception as exc:  # noqa: BLE001 - bcc's errors have no class of their own
        raise KernelError(message.replace("{exc}", str(exc)), hint) from exc


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def cflags(config: MonitorConfig) -> list[str]:
    """The -D flags that size and filter the programs for this configuration."""
    max_copy, peek_copy = copy_sizes(config)
    ports = [int(p) for p in config.plaintext_ports][:MAX_PLAIN_PORTS]
    flags = [
        "-DBUSTED_KERNEL",
        f"-DMAX_COPY={max_copy}",
        f"-DPEEK_COPY={peek_copy}",
        f"-DCHUNK_SIZE={CHUNK_SIZE}",
        f"-DRING_PAGES={_pow2_at_least(max(16, int(config.ring_pages)))}",
        f"-DPLAIN_PORT_COUNT={len(ports)}",
    ]
    flags += [f"-DPLAIN_PORT{i}={port}" for i, port in enumerate(ports)]
    if holds_writes(config):
        flags.append("-DENFORCE")
    flags.append("-Wno-macro-redefined")
    return flags


def copy_sizes(config: MonitorConfig) -> tuple[int, int]:
    """(max copy, peek copy) per call, clamped to their limits; peek never above max."""
    max_copy = max(1, min(int(config.max_copy), MAX_COPY_LIMIT))
    return max_copy, max(1, min(int(config.peek_copy), PEEK_COPY_LIMIT, max_copy))


def holds_writes(config: MonitorConfig) -> bool:
    """--enforce (not a dry run): TLS writes of holdable processes wait for a verdict."""
    return bool(config.enforce and not config.dry_run)


def program_text(bpf_dir: Path = BPF_DIR) -> str:
    """busted.h followed by every program, as one compilation unit.

    bcc rewrites map calls (``events.ringbuf_output(...)``) only in the text it is
    given, not in included files, so the header is inlined rather than #included.
    """
    parts = [(bpf_dir / HEADER).read_text()]
    for name in BASE_PROGRAMS + tls.bpf_programs():
        path = bpf_dir / name
        if path.exists():
            text = path.read_text().replace(f'#include "{HEADER}"', f"/* {HEADER} inlined above */")
            parts.append(f"/* ---- {name} ---- */\n{text}")
    return "\n".join(parts)


def dump_bpf(config: MonitorConfig) -> str:
    """The exact C text and cflags `start()` would compile (for --dump-bpf)."""
    flags = " ".join(cflags(config))
    return f"/* cflags: {flags} */\n{program_text()}"


class KernelSource:
    """EventSource protocol implementation over bcc (see busted.sources.EventSource)."""

    exhausted = False

    def __init__(self, config: MonitorConfig, proc: str = "/proc") -> None:
        self.config = config
        self.proc = proc
        self.max_copy, self.peek_copy = copy_sizes(config)
        # Optional pid binding: uprobes attached per pid charge nobody else.
        self.target_pids: tuple[int, ...] = tuple(config.pids)
        self.holds = holds_writes(config)
        self.tracker = Tracker(self.max_copy, proc=proc, peek_copy=self.peek_copy)
        self._bpf: Any = None
        self._out: list[dict[str, Any]] = []
        self._probed: dict[tuple[int, int], str] = {}  # file inode -> path
        self.stacks: dict[str, str] = {}  # probed path -> TLS stack name
        self.unlocated: dict[str, str] = {}  # path -> why its TLS functions were not found
        self.blind = BlindSpots(self.tracker, self.unlocated, self.stacks, proc,
                                sent_bytes=lambda sk: socket_bytes_sent(self._bpf, sk))
        self._rescans: list[tuple[float, int]] = []  # (due monotonic, pid)
        self._copies: list[tuple[float, str, bytes]] = []  # (due, path, raw path) being written
        self._next_ignore_refresh = 0.0
        self._next_full_rescan = 0.0
        self.probe_count = 0
        self.uprobes: uprobes.Uprobes | None = None
        self.attach_errors: list[str] = []
        self._counters = {"records": 0, "events": 0, "exec_seen": 0, "library_holds": 0}
        self._batch = 0

    # --- start -----------------------------------------------------------------------

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise PrivilegeError(
                "Capturing needs root: busted loads eBPF programs into the kernel and "
                "attaches them to tracepoints and to OpenSSL in other processes.",
                "Run it as: sudo busted monitor (or use --source synthetic to try it without).",
            )
        found = features.probe()
        if not found.ok("tracefs"):
            raise KernelError(
                "The tracing file system is not mounted, so the kernel's tracepoints "
                "cannot be found by name.",
                "Mount it with: sudo mount -t tracefs nodev /sys/kernel/tracing "
                "(or run: sudo busted doctor --fix).",
            )
        if not found.ok("headers"):
            raise KernelError(
                f"No kernel headers at {features.headers_dir()}: bcc compiles the probes "
                "at start-up against the running kernel's headers.",
                "Install linux-headers for this kernel, or run: sudo busted doctor --fix "
                "(links Debian's generic headers, which work for these probes).",
            )
        if not found.ok("uprobes"):
            raise KernelError(
                "This kernel was built without uprobes (CONFIG_UPROBE_EVENTS), which "
                "TLS plaintext capture needs.",
                "Use a kernel with CONFIG_UPROBE_EVENTS=y.",
            )
        caps = found.get("capabilities")
        if caps is not None and not caps.ok:
            # Without them the programs load but attach nowhere (or the workers cannot
            # reach their sockets): say so instead of reporting ready and seeing nothing.
            raise PrivilegeError(
                f"This process runs as root but without capabilities capture needs: "
                f"{caps.detail}.",
                f"{caps.fix[0].upper()}{caps.fix[1:]}; `busted doctor` shows what is missing.",
            )

    def start(self) -> None:
        self._preflight()
        try:
            from bcc import BPF
        except ImportError as exc:
            raise KernelError(
                "The bcc Python module is not importable from this Python.",
                "Install Debian's python3-bpfcc and use a venv made with "
                "--system-site-packages (make setup does both).",
            ) from exc
        text = program_text()
        with bcc_errors(
            "The kernel refused or bcc could not compile busted's BPF programs "
            "({exc}). This usually means the kernel headers do not match well enough "
            "or the verifier rejected a program on this kernel version.",
            "Run with --debug to see the compiler/verifier output, and "
            "`busted doctor` to check headers and mounts.",
        ):
            # BPF() also attaches every TRACEPOINT_PROBE in the text.
            self._bpf = BPF(text=text.encode(), cflags=cflags(self.config))
        self.uprobes = uprobes.Uprobes(self._bpf)
        self.tracker.ssl_info = self._ssl_info
        self._refresh_ignored(force=True)
        if self.holds:
            for pid in libssl.pids(self.proc):
                self._mark_holdable(pid)
        targets = tls.discover(self.proc)
        for path in sorted(targets):
            self._probe_file(path)
        self._next_full_rescan = time.monotonic() + FULL_RESCAN_S
        if not self._probed:
            log.warning("no OpenSSL found on this host: TLS plaintext will not be captured")
        self._bpf[b"events"].open_ring_buffer(self._on_record)
        log.info("kernel probes attached: %d uprobes on %d files (%d of them uprobe sessions), "
                 "tracepoints: %s", self.probe_count, len(self._probed),
                 self.uprobes.session_count, ", ".join(self._tracepoints()))

    def _tracepoints(self) -> list[str]:
        return sorted(k.decode() if isinstance(k, bytes) else str(k)
                      for k in getattr(self._bpf, "tracepoint_fds", {}))

    def _probe_file(self, path: str) -> bool:
        """Attach the OpenSSL uprobes to one file (library or executable), once."""
        key = libssl.file_key(path)
        if key is None or key in self._probed:
            return False
        try:
            stack, sites = tls.plan(path)
        except tls.NotLocated as exc:
            self._probed[key] = path  # asked once per file, not at every exec
            self.unlocated[path] = str(exc)
            log.warning("no probes on %s: %s", path, exc)
            return False
        except (tls.ElfError, OSError) as exc:
            self.attach_errors.append(f"{path}: {exc}")
            return False
        finally:
            memtrim.trim_if_grown()  # reading a large executable peaks at tens of MB
        if not sites:
            return False
        attached, errors = self.uprobes.attach(path, sites, self.target_pids or (-1,))
        self.attach_errors.extend(errors)
        self._probed[key] = path
        if not path.startswith(f"{self.proc}/") and len(path.encode()) < records.PATH_LEN:
            self._mark_known(path.encode())  # loading it again needs no record, no hold
        self.probe_count += attached
        self.stacks[path] = stack
        log.info("%s probes on %s: %s", stack, path,
                 "; ".join(s.describe().split(" -> ")[0] for s in sites if not s.ret))
        return attached > 0

    # --- running ---------------------------------------------------------------------

    def _on_record(self, _ctx: Any, data: Any, size: int) -> int:
        raw = ct.string_at(data, size)
        self._counters["records"] += 1
        if records.record_type(raw) == records.REC_EXEC:
            head = records.RecHead.from_buffer_copy(raw)
            self._counters["exec_seen"] += 1
            if self.holds:  # a new session (setsid + exec) may have left its terminal
                self._mark_holdable(head.pid)
            # The new program itself is checked now (cached per file, cheap): a node
            # started now may open its first TLS connection within milliseconds.
            exe = libssl.process_executable(head.pid, self.proc)
            if exe and libssl.file_key(exe) not in self._probed and tls.carries_tls(exe):
                self._probe_file(exe)
            now = time.monotonic()
            self._rescans.extend((now + d, head.pid) for d in RESCAN_AFTER_S)
        elif records.record_type(raw) == records.REC_LIBOPEN:
            self._library_opened(records.PathRec.from_buffer_copy(raw))
        self._out.extend(self.tracker.feed(raw))
        self._batch += 1
        return -1 if self._batch >= MAX_RECORDS_PER_POLL else 0

    def _library_opened(self, rec: records.PathRec) -> None:
        """A process is loading a libssl we have not seen: probe the file right away,
        before the loader has even mapped it, then tell the kernel the path is known."""
        raw_path = rec.path
        path = raw_path.decode("utf-8", "replace")
        pid = rec.h.pid
        if not path.startswith("/"):
            path = f"{self.proc}/{pid}/cwd/{path}"
        else:
            in_root = f"{self.proc}/{pid}/root{path}"
            seen_there = libssl.file_key(in_root)
            if seen_there is not None and seen_there != libssl.file_key(path):
                path = in_root  # another mount namespace
        try:
            self._probe_library(path, raw_path, complete=rec.h.held != records.LIB_WRITING)
            if rec.h.held == records.LIB_WRITING and libssl.file_key(path) not in self._probed:
                # A copy being written: look again once the writer is likely done, so it
                # is probed before whoever made it loads it.
                now = time.monotonic()
                self._copies.extend((now + d, path, raw_path) for d in COPY_RETRY_AFTER_S)
            log.debug("library opened by pid %d: %s (held: %d)", pid, path, rec.h.held)
        finally:  # whatever went wrong above, a held opener (or exec) is never left stopped
            if rec.h.held == records.LIB_HELD:  # stopped until now: its probes are in place
                self._counters["library_holds"] += 1
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                self.unhold(pid)

    # --- hold hooks (busted.enforce.hooks.HoldHooks, used by the enforcer) ---------------

    def _mark_holdable(self, pid: int) -> None:
        """Writes of a process without a controlling terminal are held (stopped until
        their verdict); a process with one is never stopped (job control)."""
        terminal = procstat.has_terminal(pid, self.proc)
        table = self._bpf[b"holdable"]
        key = ct.c_uint32(pid)
        if terminal is False:
            table[key] = ct.c_uint8(1)
        else:
            try:
                del table[key]
            except KeyError:
                pass

    def kill_on_write(self, pid: int) -> None:
        """Kill the process in the kernel at its next TLS write (it was denied)."""
        if self.holds and self._bpf is not None:
            self._bpf[b"kill_on_write"][ct.c_uint32(pid)] = ct.c_uint8(1)

    def set_holding(self, on: bool) -> None:
        """Start or stop holding writes (the enforcer's answer loop is up, or gone)."""
        if self.holds and self._bpf is not None:
            self._bpf[b"hold_switch"][ct.c_int(0)] = ct.c_uint32(1 if on else 0)

    def held_pids(self) -> dict[int, int]:
        """Processes the write probe stopped and userspace has not finished with:
        pid -> kernel time (ns) of the stop."""
        if not self.holds or self._bpf is None:
            return {}
        return {k.value: v.value for k, v in self._bpf[b"held_pids"].items()}

    def unhold(self, pid: int) -> None:
        """Userspace resumed or killed ``pid``: forget the kernel's note of the stop."""
        if self.holds and self._bpf is not None:
            try:
                del self._bpf[b"held_pids"][ct.c_uint32(pid)]
            except KeyError:
                pass

    def held_map_fd(self) -> int:
        """The fd of that map, for the watchdog (it resumes them if capture dies)."""
        return self._bpf[b"held_pids"].map_fd if self.holds and self._bpf is not None else -1

    def switch_map_fd(self) -> int:
        """The fd of the hold switch, for the watchdog (it turns holding off if capture
        dies: the probes outlive it by seconds)."""
        return self._bpf[b"hold_switch"].map_fd if self.holds and self._bpf is not None else -1

    def fileno(self) -> int:
        """A descriptor that polls readable when the kernel woke the ring buffer (for
        callers that wait on it together with sockets, then call ``poll(0)``)."""
        manager = getattr(self._bpf, "_ringbuf_manager", None)
        if not manager:
            return -1
        libbpf = ct.CDLL("libbpf.so.1")
        libbpf.ring_buffer__epoll_fd.argtypes = [ct.c_void_p]
        return int(libbpf.ring_buffer__epoll_fd(manager))

    def _probe_library(self, path: str, raw_path: bytes, complete: bool = True) -> None:
        """Probe a library file named by an open, unless done; the path becomes known
        (no more records for it) once probed, or once a complete file proved not to be
        OpenSSL. A file still missing or being written is asked about again."""
        key = libssl.file_key(path)
        if key is not None and key not in self._probed:
            self._probe_file(path)
        if libssl.file_key(path) in self._probed or (
                complete and os.path.isfile(path) and not libssl.has_openssl(path)):
            self._mark_known(raw_path)

    def _mark_known(self, raw_path: bytes) -> None:
        """No more REC_LIBOPEN records (nor holds) for opens of this path."""
        try:
            self._bpf[b"known_libs"][ct.create_string_buffer(raw_path, records.PATH_LEN)] = (
                ct.c_uint8(1))
        except Exception as exc:  # noqa: BLE001 - a full map only costs a record per open
            log.debug("known_libs: %s", exc)

    def _ssl_info(self, pid: int, ssl: int) -> tuple[int, str] | None:
        try:
            info = self._bpf[b"ssl_infos"][records.ConnKey(pid, 0, ssl)]
        except KeyError:
            return None
        return info.fd, info.sni.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _rescan_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_full_rescan:
            self._next_full_rescan = now + FULL_RESCAN_S
            for path in tls.discover(self.proc):
                if libssl.file_key(path) not in self._probed:
                    self._probe_file(path)
        if self._copies:
            due_copies = [c for c in self._copies if c[0] <= now]
            self._copies = [c for c in self._copies if c[0] > now]
            for _, path, raw_path in due_copies:
                self._probe_library(path, raw_path, complete=False)
        if not self._rescans:
            return
        due = [pid for t, pid in self._rescans if t <= now]
        if not due:
            return
        self._rescans = [(t, pid) for t, pid in self._rescans if t > now]
        for pid in set(due):
            for path in tls.targets_of_process(pid, self.proc):
                if libssl.file_key(path) not in self._probed:
                    self._probe_file(path)

    def _refresh_ignored(self, force: bool = False) -> None:
        """Keep busted's own processes out of the capture (no feedback loops)."""
        now = time.monotonic()
        if not force and now < self._next_ignore_refresh:
            return
        self._next_ignore_refresh = now + IGNORE_REFRESH_S
        ours = {os.getpid()}
        parent = os.getppid()
        if parent > 1 and _is_busted(parent, self.proc):
            ours.add(parent)
            ours |= _children(parent, self.proc)
        table = self._bpf[b"ignored_pids"]
        for key in list(table.keys()):
            if key.value not in ours:  # a restarted worker's old pid
                del table[key]
        for pid in ours:
            table[ct.c_uint32(pid)] = ct.c_uint8(1)

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        self._batch = 0
        self._bpf.ring_buffer_poll(max(0, int(timeout_s * 1000)))
        # Streamed reads are written without waking us (see emit_data in busted.h), and
        # epoll only reports a ring that was woken: take whatever is there after the wait.
        if self._batch < MAX_RECORDS_PER_POLL:
            self._bpf.ring_buffer_consume()
        self._rescan_due()
        self._refresh_ignored()
        self._out.extend(self.blind.tick())
        out, self._out = self._out, []
        self._counters["events"] += len(out)
        return out

    def feedback(self, command: dict[str, Any]) -> None:
        if command.get("cmd") != messages.VERDICT or self._bpf is None:
            return
        key = records.ConnKey(int(command["pid"]), 0, int(command["conn_id"]) & (2**64 - 1))
        table = self._bpf[b"verdicts"]
        if not command.get("capture", True):
            table[key] = ct.c_uint8(records.VERDICT_SKIP)
        elif not command.get("hold", True):
            table[key] = ct.c_uint8(records.VERDICT_NO_HOLD)
        else:
            try:
                del table[key]
            except KeyError:
                pass

    def lost_counters(self) -> dict[str, int]:
        if self._bpf is None:
            return {}
        table = self._bpf[b"lost"]
        out = {}
        for slot, name in records.LOST_NAMES.items():
            out[name] = int(sum(table[ct.c_int(slot)]))
        return out

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """Per BPF program: (runs, total ns) since load, from the kernel's own counters.

        The kernel counts only while ``/proc/sys/kernel/bpf_stats_enabled`` is 1 (the
        caller turns it on; it costs every BPF program two clock reads). This is the
        in-kernel part of what a traced call pays, free of the noise of wall clocks.
        """
        if self._bpf is None:
            return {}
        out = {}
        for name, fn in self._bpf.funcs.items():
            found = bpf_syscall.prog_run_stats(fn.fd)
            if found is not None:
                key = name.decode() if isinstance(name, bytes) else str(name)
                out[key] = found
        return out

    def stats(self) -> dict[str, int]:
        lost = self.lost_counters()
        out = {
            "lost": lost.get("ringbuf_full", 0) + lost.get("stash_full", 0),
            **{f"kernel_{k}": v for k, v in lost.items()},
            "uprobes": self.probe_count,
            "uprobe_sessions": self.uprobes.session_count if self.uprobes else 0,
            "probed_files": len(self._probed),
            **self._counters,
            **self.blind.stats(),
        }
        for kind, n in self.tracker.errors.items():
            out[f"decode_{kind}"] = n
        return out

    def close(self) -> None:
        if self._bpf is not None:
            try:
                self._bpf.ring_buffer_poll(0)
            except Exception:  # noqa: BLE001 - best effort drain at shutdown
                pass
            self._out.extend(self.tracker.flush())
            if self.uprobes is not None:
                self.uprobes.close()
            _detach_all(self._bpf)
            self._bpf.cleanup()
            self._bpf = None


def _detach_all(bpf: Any) -> None:
    """Detach bcc's own probes (the tracepoints; the uprobes are :mod:`uprobes`'), several
    at a time: one by one (bcc's cleanup) each release waits for the kernel."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(bpf.detach_tracepoint, name) for name in list(bpf.tracepoint_fds)]

    def run(job) -> None:
        try:
            job[0](job[1])
        except Exception as exc:  # noqa: BLE001 - cleanup() retries what is left
            log.debug("detach %s: %s", job[1], exc)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(run, jobs))


def _is_busted(pid: int, proc: str) -> bool:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            return b"busted" in f.read()
    except OSError:
        return False


def _children(parent: int, proc: str) -> set[int]:
    return {pid for pid in libssl.pids(proc) if procstat.parent_of(pid, proc) == parent}
