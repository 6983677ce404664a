"""Blind spots: TLS connections that matter, whose plaintext busted cannot read.

Capture sees every TCP connection and the ClientHello of every TLS one (the kernel
copies it: bpf/plaintext.bpf.c, parsed by :mod:`busted.kernel.tls.hello`), but reads
plaintext only where a TLS library is probed. A connection busted cannot read is not an
error, it is a blind spot, and it must be said out loud, not left as a silent absence of
events. The rules, per connection whose ClientHello was seen:

- it matters when its SNI (or the DNS name of its address) is an LLM provider's host,
  when its program is a known agent, or when its program carries a TLS stack busted
  recognised but could not locate (``KernelSource.unlocated``);
- it is blind when it sent more than :data:`BEYOND_HELLO` bytes after its hello (a
  request went out, not just a handshake) and, :data:`CONFIRM_S` after that was first
  noticed, no plaintext of it was seen: neither on the connection itself, nor from the
  same process to the same host, nor from the process unattributed (the plaintext
  record of a probed write follows its bytes by microseconds; the wait covers a busy
  ring);
- each (process, destination) gives at most one ``BLIND_SPOT`` event per
  :data:`REPEAT_S`, naming the executable, the TLS library, why it is not seen and
  what to do.

The tracker records the facts as records arrive (a :class:`TlsConnection` per hello,
the plaintext it saw per process and host); :meth:`BlindSpots.tick` runs from the
capture's poll loop, off the per-record path: it admits new connections (a readlink
per connection) and, twice a second, reads the byte counts of the few candidates from
the kernel's socket map. Nothing here runs per payload record.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from busted.classifier.providers import provider_for_host
from busted.kernel.lru import Lru
from busted.kernel.tls import identify
from busted.kernel.tls.hello import ClientHello

if TYPE_CHECKING:
    from busted.kernel.tracker import Tracker

Event = dict[str, Any]

BEYOND_HELLO = 512  # bytes sent after the hello that mean a request went out
CONFIRM_S = 2.0  # no plaintext this long after the bytes were noticed: blind
CHECK_EVERY_S = 0.5
REPEAT_S = 60.0  # one event per process and destination per minute
GIVE_UP_S = 600.0  # a quiet connection stops being watched
KEEP_S = 600.0  # a blind process stays in `busted status` this long after its last report
MAX_CANDIDATES = 4096
MAX_REPORTED = 4096

# Programs that are AI agents whatever host they talk to (executable basenames), and
# where agents install (busted.kernel.tls.AGENT_GLOBS adds the pinned layouts).
AGENT_NAMES = frozenset({
    "claude", "codex", "gemini", "copilot", "cursor-agent", "opencode", "aider", "goose",
    "amp", "crush", "qwen", "kiro-cli",
})

# Why a library is not read, and what the user can do about it.
_NOT_HOOKED = {
    "GnuTLS": ("busted has no probes for GnuTLS",
               "use an OpenSSL build of the client (curl rather than gnutls-cli, libcurl4 "
               "rather than libcurl3-gnutls), or send its traffic through a proxy busted sees"),
    "NSS": ("busted has no probes for NSS",
            "use a client built on OpenSSL, or send its traffic through a proxy busted sees"),
    "Java": ("Java's TLS (JSSE) runs inside the JVM, where uprobes cannot read it",
             "give the JVM an OpenSSL-backed provider (e.g. Conscrypt or wildfly-openssl), or "
             "send its traffic through a proxy busted sees"),
}
_GENERIC_ADVICE = ("run `busted doctor --coverage` and report the program and its version; "
                   "until then, its requests to this host are not seen")


@dataclass
class TlsConnection:
    """What the ClientHello of one connection told, and what was seen of it since."""

    pid: int
    process_name: str
    uid: int
    fd: int
    conn_id: int  # the kernel's TCP connection id
    sk: int  # struct sock *: its byte counts in the kernel's `socks` map
    hello: ClientHello
    hello_len: int  # bytes of the write that carried the hello
    seen_ns: int  # kernel monotonic time of the hello
    timestamp: float  # wall time of the hello
    dst_ip: str = ""
    dst_port: int = 0
    dns_name: str = ""
    plaintext: bool = False  # a TLS data event was tied to this connection
    sent_at_close: int | None = None  # bytes sent, from the close record
    over_at: float | None = None  # when more than BEYOND_HELLO bytes were first noticed

    @property
    def sni(self) -> str:
        return self.hello.sni

    def destination(self) -> str:
        return self.sni or self.dns_name or f"{self.dst_ip}:{self.dst_port}"


def socket_bytes_sent(bpf: Any, sk: int) -> int | None:
    """Bytes sent so far on a tracked socket (connections.bpf.c `socks`), None when the
    kernel no longer tracks it."""
    if bpf is None or not sk:
        return None
    import ctypes as ct

    try:
        return int(bpf[b"socks"][ct.c_uint64(sk)].sent)
    except Exception:  # noqa: BLE001 - bcc: KeyError, or a map gone at exit
        return None


def is_agent(exe: str, process_name: str, globs: tuple[str, ...] = ()) -> bool:
    """A known AI agent program, by executable name, install place or process name."""
    if not globs:
        from busted.kernel.tls import AGENT_GLOBS

        globs = AGENT_GLOBS
    name = os.path.basename(exe)
    if name in AGENT_NAMES or process_name in AGENT_NAMES:
        return True
    return any(fnmatch.fnmatch(exe, pattern) for pattern in globs)


def explain(library: str, exe: str, unlocated: str, probed: str) -> tuple[str, str]:
    """(blind_reason, blind_advice) for a blind connection of a program."""
    lib = library or "an unidentified TLS library"
    if unlocated:
        return (f"{lib} recognised in {exe or 'the program'} but its functions were not "
                f"located: {unlocated}",
                "this build is not covered by busted's signatures yet: report its version "
                "(busted doctor --coverage); until then its requests are not seen")
    if probed:
        return (f"{probed} is probed in this process, but no plaintext of this connection "
                f"went through it (the connection uses {lib})", _GENERIC_ADVICE)
    if library in _NOT_HOOKED:
        return _NOT_HOOKED[library]
    if library:
        return (f"{library} was not found in a form busted can probe in "
                f"{exe or 'the program'}", _GENERIC_ADVICE)
    return ("no TLS library busted knows was found in the process", _GENERIC_ADVICE)


@dataclass
class _Program:
    """What admission learnt about a process (cached a little: a process opens many
    connections in a burst)."""

    exe: str
    files: tuple[str, set[str]]
    agent: bool
    unlocated: str  # why its TLS stack was not located, "" if it was or has none
    at: float


class BlindSpots:
    """Watches candidate connections and reports the blind ones (see the module doc)."""

    def __init__(self, tracker: Tracker, unlocated: dict[str, str], stacks: dict[str, str],
                 proc: str = "/proc", sent_bytes: Callable[[int], int | None] = lambda sk: None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.tracker = tracker
        self.unlocated = unlocated  # path -> reason (KernelSource fills it)
        self.stacks = stacks  # probed path -> stack name (KernelSource fills it)
        self.proc = proc
        self.sent_bytes = sent_bytes
        self.clock = clock
        self.wall = wall
        self.candidates: dict[tuple[int, int], TlsConnection] = {}
        self._programs: Lru = Lru(1024)  # pid -> _Program
        self._last_event: Lru = Lru(MAX_REPORTED)  # (pid, destination) -> clock
        self.blind: Lru = Lru(MAX_REPORTED)  # (pid, destination) -> status entry
        self.events = 0  # BLIND_SPOT events emitted
        self._next_check = 0.0

    # --- admission ------------------------------------------------------------------

    def _program(self, pid: int, process_name: str) -> _Program:
        now = self.clock()
        known = self._programs.get(pid)
        if known is not None and now - known.at < 5.0:
            return known
        files = identify.process_files(pid, self.proc)
        exe = files[0]
        program = _Program(exe, files, is_agent(exe, process_name), self._unlocated_reason(pid),
                           now)
        self._programs[pid] = program
        return program

    def _unlocated_reason(self, pid: int) -> str:
        if not self.unlocated:
            return ""
        try:
            st = os.stat(f"{self.proc}/{pid}/exe")
        except OSError:
            return ""
        for path, why in list(self.unlocated.items()):
            try:
                other = os.stat(path)
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return why
        return ""

    def _admit(self, conns: list[TlsConnection]) -> None:
        for c in conns:
            host = c.sni or c.dns_name
            llm = bool(host and provider_for_host(host))
            program = self._program(c.pid, c.process_name)
            if (llm or program.agent or program.unlocated) and (
                    len(self.candidates) < MAX_CANDIDATES):
                self.candidates[(c.pid, c.conn_id)] = c

    # --- judging ----------------------------------------------------------------------

    def tick(self) -> list[Event]:
        """Admit new connections; every CHECK_EVERY_S judge the candidates. Returns the
        BLIND_SPOT events to emit."""
        self._admit(self.tracker.take_tls_connections())
        now = self.clock()
        if now < self._next_check or not self.candidates:
            return []
        self._next_check = now + CHECK_EVERY_S
        out: list[Event] = []
        for key, c in list(self.candidates.items()):
            verdict = self._judge(c, now)
            if verdict == "wait":
                continue
            del self.candidates[key]
            if verdict == "blind":
                event = self._report(c)
                if event is not None:
                    out.append(event)
        return out

    def _seen_plaintext(self, c: TlsConnection) -> bool:
        if c.plaintext:
            return True
        seen = self.tracker.plaintext_seen
        return (seen.get((c.pid, c.sni), 0) >= c.seen_ns
                or seen.get((c.pid, ""), 0) >= c.seen_ns)

    def _judge(self, c: TlsConnection, now: float) -> str:
        """"wait", "drop" (not blind, or no longer worth watching) or "blind"."""
        if self._seen_plaintext(c):
            return "drop"
        closed = c.sent_at_close is not None
        sent = c.sent_at_close if closed else self.sent_bytes(c.sk)
        age = now - c.seen_ns / 1e9
        if sent is None or sent - c.hello_len <= BEYOND_HELLO:
            gone = sent is None and age > 5.0  # the kernel forgot the socket, no close seen
            return "drop" if closed or gone or age > GIVE_UP_S else "wait"
        if c.over_at is None:
            c.over_at = now
            return "wait"
        return "blind" if now - c.over_at >= CONFIRM_S else "wait"

    def _report(self, c: TlsConnection) -> Event | None:
        program = self._program(c.pid, c.process_name)
        who = identify.identify(c.hello, c.pid, self.proc, program.files)
        probed = self._probed_in(program.files)
        reason, advice = explain(who.library, program.exe, program.unlocated, probed)
        destination = c.destination()
        key = (c.pid, destination)
        now, wall = self.clock(), self.wall()
        entry = self.blind.get(key)
        if entry is None:
            entry = {"pid": c.pid, "process_name": c.process_name, "exe": program.exe,
                     "destination": destination, "sni": c.sni, "dns_name": c.dns_name,
                     "dst_ip": c.dst_ip, "dst_port": c.dst_port, "first_seen": wall,
                     "connections": 0}
        entry.update(tls_library=who.library, tls_library_why=who.why, blind_reason=reason,
                     blind_advice=advice, last_seen=wall,
                     llm_host=bool(provider_for_host(c.sni or c.dns_name or "")))
        entry["connections"] += 1
        self.blind[key] = entry
        last = self._last_event.get(key)
        if last is not None and now - last < REPEAT_S:
            return None
        self._last_event[key] = now
        self.events += 1
        sent = c.sent_at_close if c.sent_at_close is not None else self.sent_bytes(c.sk)
        event: Event = {
            "event_type": "BLIND_SPOT", "timestamp": wall, "pid": c.pid, "uid": c.uid,
            "process_name": c.process_name, "exe": program.exe, "conn_id": c.conn_id,
            "dst_ip": c.dst_ip, "dst_port": c.dst_port, "bytes": max(0, (sent or 0) - c.hello_len),
            "tls_library": who.library, "blind_reason": reason, "blind_advice": advice,
        }
        if c.sni:
            event["sni"] = c.sni
        if c.dns_name:
            event["dns_name"] = c.dns_name
        if c.hello.alpn:
            event["tls_alpn"] = ",".join(c.hello.alpn)
        provider = provider_for_host(c.sni or c.dns_name or "")
        if provider:
            event["provider"] = provider
        return event

    def _probed_in(self, files: tuple[str, set[str]]) -> str:
        """"Stack at path" when a file of the process is probed, else ""."""
        exe, mapped = files
        for path, stack in list(self.stacks.items()):
            if path == exe or path in mapped:
                return f"{stack} at {path}"
        return ""

    # --- reporting --------------------------------------------------------------------

    def report(self) -> list[dict[str, Any]]:
        """Blind programs for `busted status` and doctor: recent blind connections by
        process and destination, then programs whose TLS stack was not located."""
        wall = self.wall()
        out = []
        for key, entry in list(self.blind.items()):
            if wall - entry["last_seen"] > KEEP_S:
                del self.blind[key]
                continue
            out.append(dict(entry, alive=os.path.exists(f"{self.proc}/{entry['pid']}")))
        for path, why in list(self.unlocated.items()):
            out.append({"pid": 0, "process_name": os.path.basename(path), "exe": path,
                        "destination": "", "tls_library": "", "alive": False,
                        "blind_reason": f"TLS functions not located: {why}",
                        "blind_advice": explain("", path, why, "")[1]})
        return out

    def stats(self) -> dict[str, Any]:
        """For capture's heartbeat: the event count, the live blind processes (a float:
        the supervisor keeps floats as gauges, sums ints) and the table itself."""
        table = self.report()
        live = {e["pid"] for e in table if e["pid"] and e["alive"]}
        return {"blind_spots": self.events, "blind_processes": float(len(live)),
                "blind": table}
