"""`busted doctor --coverage`: every process with TCP peers, and how busted sees it.

For each process holding TCP connections (read from /proc: its socket fds matched
against its network namespace's tcp tables), the answer is one of:

- seen: a TLS stack of the process is probed (OpenSSL by its symbols, BoringSSL by
  signature, Go, rustls...), named with the file it is in;
- plain text: its peers are plain-text model ports (Ollama's 11434), read from sockets;
- blind: it carries a TLS library busted does not probe (GnuTLS, NSS, Java), or one it
  recognised but could not locate, or the running monitor reported BLIND_SPOTs for it
  (the monitor knows what it did not see; this module only knows what is probed);
- no TLS library: nothing busted knows (not TLS, or a stack nobody recognised).

The monitor, when one runs, also names the destinations (SNI, DNS) of blind
connections, which is how a blind process is known to talk to an LLM host (``llm``):
:func:`exit_code` is 3 when one does. Reads only /proc and the files processes run;
no BPF. Needs root to see other users' processes.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from busted.kernel import tls
from busted.kernel.tls import identify

EXIT_BLIND_LLM = 3

# /proc/net/tcp states worth listing: established, connecting, closing by the peer
_STATES = {"01", "02", "08"}


@dataclass
class ProcessCoverage:
    pid: int
    name: str
    exe: str
    peers: list[str]  # "ip:port" of its TCP connections
    seen: str  # how busted sees it, in words
    tls_library: str = ""
    blind: bool = False
    reason: str = ""
    advice: str = ""
    llm: bool = False  # a blind connection of it goes to an LLM host (the monitor says)
    destinations: list[str] = field(default_factory=list)  # names the monitor saw

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _peer_text(hexaddr: str, family: int) -> str:
    addr, port = hexaddr.split(":")
    raw = bytes.fromhex(addr)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if family == socket.AF_INET6 and raw[:12] == b"\0" * 10 + b"\xff\xff":
        raw, family = raw[12:], socket.AF_INET
    ip = socket.inet_ntop(family, raw)
    return f"[{ip}]:{int(port, 16)}" if family == socket.AF_INET6 else f"{ip}:{int(port, 16)}"


def _tcp_table(pid: int, proc: str) -> dict[str, str]:
    """socket inode -> remote "ip:port", for the connections of pid's network namespace."""
    out: dict[str, str] = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"{proc}/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] in _STATES:
                        out[cols[9]] = _peer_text(cols[2], family)
        except (OSError, ValueError):
            continue
    return out


def tcp_peers(proc: str = "/proc") -> dict[int, list[str]]:
    """pid -> remote addresses of its TCP connections (processes without any left out)."""
    tables: dict[str, dict[str, str]] = {}  # network namespace -> its table
    out: dict[int, list[str]] = {}
    for pid in tls.openssl.pids(proc):
        try:
            netns = os.readlink(f"{proc}/{pid}/ns/net")
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        inodes = []
        for fd in fds:
            try:
                link = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.append(link[8:-1])
        if not inodes:
            continue
        if netns not in tables:
            tables[netns] = _tcp_table(pid, proc)
        peers = sorted({tables[netns][i] for i in inodes if i in tables[netns]})
        if peers:
            out[pid] = peers
    return out


def _probed(pid: int, proc: str) -> tuple[list[str], str]:
    """(probed stacks as "NAME at path", why a recognised stack was not located)."""
    seen, unlocated = [], ""
    for path in sorted(tls.targets_of_process(pid, proc)):
        try:
            stack, sites = tls.plan(path)
        except tls.NotLocated as exc:
            unlocated = f"{path}: {exc}"
            continue
        except (tls.ElfError, OSError):
            continue
        if sites:
            seen.append(f"{stack} at {path}")
    return seen, unlocated


def _name(pid: int, proc: str) -> str:
    try:
        with open(f"{proc}/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def survey(proc: str = "/proc", monitor_blind: list[dict[str, Any]] | None = None,
           plain_ports: tuple[int, ...] = (11434,), skip: set[int] | None = None,
           ) -> list[ProcessCoverage]:
    """Every process with TCP peers and how it is seen, blind ones first.

    ``monitor_blind`` is the running monitor's table of blind programs (`busted status`),
    ``skip`` pids not to list (the caller itself).
    """
    from busted.kernel.blindspots import explain

    reported: dict[int, list[dict[str, Any]]] = {}
    for entry in monitor_blind or []:
        if entry.get("pid"):
            reported.setdefault(int(entry["pid"]), []).append(entry)
    rows = []
    for pid, peers in tcp_peers(proc).items():
        if skip and pid in skip:
            continue
        files = identify.process_files(pid, proc)
        row = ProcessCoverage(pid, _name(pid, proc), files[0], peers, seen="")
        probed, unlocated = _probed(pid, proc)
        carried = identify.from_files(pid, proc, files)
        entries = reported.get(pid, [])
        if entries:
            e = entries[-1]
            row.blind, row.tls_library = True, e.get("tls_library", "")
            row.reason, row.advice = e.get("blind_reason", ""), e.get("blind_advice", "")
            row.destinations = sorted({x.get("destination", "") for x in entries} - {""})
            row.llm = any(x.get("llm_host") for x in entries)
            row.seen = "blind (the monitor saw its connections but none of their plaintext)"
        elif unlocated:
            library = next(iter(carried), "")
            row.blind, row.tls_library = True, library
            row.reason, row.advice = explain(library, row.exe, unlocated, "")
            row.seen = "blind (TLS stack recognised, functions not located)"
        elif probed:
            others = sorted(set(carried) - {identify.family(p.split(" at ")[0]) for p in probed})
            row.seen = "probed: " + "; ".join(probed)
            if others:
                row.seen += f" (also carries {', '.join(others)}, not probed)"
            row.tls_library = identify.family(probed[0].split(" at ")[0])
        elif carried:
            library = sorted(carried)[0]
            row.blind, row.tls_library = True, library
            row.reason, row.advice = explain(library, row.exe, "", "")
            row.seen = f"blind ({library} is not probed)"
        elif all(p.rsplit(":", 1)[1] in {str(x) for x in plain_ports} for p in peers):
            row.seen = "plain text (read from its sockets)"
        else:
            row.seen = "no TLS library found (not TLS, or a TLS stack busted does not know)"
        rows.append(row)
    rows.sort(key=lambda r: (not (r.blind and r.llm), not r.blind, r.name, r.pid))
    return rows


def exit_code(rows: list[ProcessCoverage]) -> int:
    """3 when a process talking to an LLM host is blind, else 0."""
    return EXIT_BLIND_LLM if any(r.blind and r.llm for r in rows) else 0
