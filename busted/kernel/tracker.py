"""Turn decoded kernel records into schema events (no bcc, no root: unit-testable).

The kernel sends small facts; this module keeps the state that joins them:

- payload chunks of one call (several records when a call exceeds CHUNK_SIZE) are
  joined back into ONE event whose ``payload`` is the whole call;
- ``SSL*`` -> SNI (SSL_ctrl) and ``SSL*`` -> socket fd (SSL_set_fd);
- (pid, fd) and struct sock * -> the connection's addresses (CONNECT/ESTABLISHED), with a
  /proc fallback for sockets that were open before the monitor started;
- pid -> process name and container id (cached; /proc read once per process);
- DNS payloads -> DNS_QUERY / DNS_ANSWER events, and an IP -> name table;
- a connection's ClientHello (REC_HELLO) -> its SNI on every later event of the
  connection, and the facts blind-spot detection reads (busted.kernel.blindspots);
- a connection's request/response exchanges (REC_EXCHANGE) -> TCP_EXCHANGE events with
  their statistics (``exchange``, busted.ml's features) and, when plaintext of the
  connection was seen, the conn_id its payload events carry (``plaintext_conn_id``).

``proc`` (the /proc root) and ``clock`` are injected so tests can hand in fakes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from busted.kernel import dns, records
from busted.kernel.blindspots import TlsConnection
from busted.kernel.containers import container_id_of_pid
from busted.kernel.lru import Lru
from busted.kernel.tls import hello as tls_hello

Event = dict[str, Any]

_MAX_ENTRIES = 65536  # per table: bounded memory whatever the traffic
_MAX_PENDING = 4096  # calls whose later chunks are still due


@dataclass
class Conn:
    src_ip: str = ""
    src_port: int = 0
    dst_ip: str = ""
    dst_port: int = 0
    sk: int = 0  # struct sock *, when its connect was seen
    tls: TlsConnection | None = None  # once its ClientHello was seen
    plaintext_conn_id: int = 0  # conn_id of its payload events (an SSL* for TLS), once seen

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.dst_ip:
            out.update(dst_ip=self.dst_ip, dst_port=self.dst_port)
        if self.src_ip:
            out.update(src_ip=self.src_ip, src_port=self.src_port)
        return out


@dataclass
class _Pending:
    head: records.DataHead
    data: bytearray | bytes
    want: int  # bytes the kernel meant to send for this call
    complete: bool = True  # False once a chunk arrives empty (read failure)


def ip_text(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(bytes(raw[:4])))
    if family == socket.AF_INET6:
        addr = ipaddress.IPv6Address(bytes(raw[:16]))
        return str(addr.ipv4_mapped or addr)
    return ""


class Tracker:
    """Feeds on records, yields events. One instance per KernelSource."""

    def __init__(
        self,
        max_copy: int,
        proc: str = "/proc",
        clock: Callable[[], float] = time.time,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        peek_copy: int | None = None,
    ) -> None:
        self.max_copy = max_copy
        # what the kernel copies of a call on a connection that has not sent a request
        # (data records without FLAG_WIDE); None = the same as max_copy
        self.peek_copy = max_copy if peek_copy is None else peek_copy
        self.proc = proc
        # bpf_ktime_get_ns is CLOCK_MONOTONIC: one offset turns it into wall time
        self._wall_offset = clock() - monotonic_ns() / 1e9
        self._procs: Lru = Lru(4096)  # pid -> (process_name, container_id)
        self._exec_names: Lru = Lru(4096)  # pid -> name of the program it exec'd
        self._sni: Lru = Lru(_MAX_ENTRIES)  # (pid, ssl) -> name
        self._ssl_fd: Lru = Lru(_MAX_ENTRIES)  # (pid, ssl) -> fd
        self._by_fd: Lru = Lru(_MAX_ENTRIES)  # (pid, fd) -> Conn
        self._by_sk: Lru = Lru(_MAX_ENTRIES)  # sk -> (pid, fd, Conn, proc fields)
        self._ssl_sk: Lru = Lru(_MAX_ENTRIES)  # (pid, ssl) -> sk first seen for a fd-less SSL
        self._pending: dict[tuple[int, int, int, int], _Pending] = {}
        self.ip_names: Lru = Lru(_MAX_ENTRIES)  # dst ip -> DNS name
        # (pid, SSL*) -> (fd, sni) from the kernel's ssl_infos map: the fallback when a
        # flood dropped the SNI / SSL_set_fd records (set by the source)
        self.ssl_info: Callable[[int, int], tuple[int, str] | None] = lambda pid, ssl: None
        self._ssl_checked: Lru = Lru(_MAX_ENTRIES)
        self.errors: dict[str, int] = {}
        # for busted.kernel.blindspots: connections whose hello was seen since it last
        # asked, and (pid, sni or "") -> kernel time of the last TLS plaintext seen
        self._new_tls: list[TlsConnection] = []
        self.plaintext_seen: Lru = Lru(_MAX_ENTRIES)

    # --- helpers ----------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def _process(self, h: records.RecHead) -> Event:
        pid = h.pid
        cached = self._procs.get(pid)
        thread = records.comm(h)
        if cached is None:
            cached = (self._process_name(pid, thread), container_id_of_pid(pid, self.proc))
            self._procs[pid] = cached
        ev: Event = {
            "timestamp": self._wall_offset + h.ts_ns / 1e9,
            "pid": pid,
            "tid": h.tid,
            "uid": h.uid,
            "gid": h.gid,
            "process_name": cached[0],
            "cgroup_id": h.cgroup_id,
        }
        if thread != cached[0]:
            ev["thread_name"] = thread
        if cached[1]:
            ev["container_id"] = cached[1]
        return ev

    def _process_name(self, pid: int, thread: str) -> str:
        """The process's own name, not the calling thread's: agents write from worker
        threads (Codex's tokio-rt-worker, Claude Code's HTTP Client). The main thread's
        comm, else the program it exec'd (the process is gone), else the thread's."""
        try:
            with open(f"{self.proc}/{pid}/comm", "rb") as f:
                name = f.read().strip().decode("utf-8", "replace")
            if name:
                return name
        except OSError:
            pass
        return self._exec_names.get(pid) or thread

    def forget_process(self, pid: int) -> None:
        """The process ran a new program or ended (its pid will be reused): forget it."""
        self._procs.pop(pid, None)

    def _conn_for(self, pid: int, fd: int, sk: int) -> Conn | None:
        if fd >= 0:
            conn = self._by_fd.get((pid, fd))
            if conn is None:
                conn = self._conn_from_proc(pid, fd)
                self._by_fd[(pid, fd)] = conn
            return conn if conn.dst_ip else None
        known = self._by_sk.get(sk) if sk else None
        return known[2] if known else None

    def _conn_from_proc(self, pid: int, fd: int) -> Conn:
        """Addresses of a socket opened before the monitor started, from /proc."""
        try:
            link = os.readlink(f"{self.proc}/{pid}/fd/{fd}")
        except OSError:
            return Conn()
        if not link.startswith("socket:["):
            return Conn()
        inode = link[8:-1]
        for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
            try:
                with open(f"{self.proc}/{pid}/net/{name}") as f:
                    next(f, None)
                    for line in f:
                        cols = line.split()
                        if len(cols) > 9 and cols[9] == inode:
                            return _conn_from_proc_line(cols[1], cols[2], family)
            except OSError:
                continue
        return Conn()

    # --- records ------------------------------------------------------------------------

    def feed(self, raw: bytes) -> list[Event]:
        """Consume one raw ring-buffer record; return the events it completes."""
        try:
            rec, payload = records.decode(raw)
        except records.RecordError:
            self._count("bad_record")
            return []
        kind = rec.type if isinstance(rec, records.RecHead) else rec.h.type
        if kind == records.REC_DATA:
            return self._data(rec, payload)
        if kind == records.REC_SNI:
            name = rec.name.decode("utf-8", "replace")
            if name:
                self._sni[(rec.h.pid, rec.ssl)] = name
            return []
        if kind == records.REC_SSL_FD:
            self._ssl_fd[(rec.h.pid, rec.ssl)] = rec.fd
            return []
        if kind == records.REC_SSL_FREE:
            key = (rec.h.pid, rec.ssl)
            self._sni.pop(key, None)
            self._ssl_fd.pop(key, None)
            self._ssl_sk.pop(key, None)
            self._ssl_checked.pop(key, None)
            return []
        if kind in (records.REC_CONNECT, records.REC_ESTABLISHED, records.REC_CLOSE):
            return self._connection(kind, rec)
        if kind in (records.REC_EXEC, records.REC_EXIT):
            self.forget_process(rec.pid)
            if kind == records.REC_EXEC:  # the new program's name, for after it is gone
                self._exec_names[rec.pid] = records.comm(rec)
            else:
                self._exec_names.pop(rec.pid, None)
            return []
        if kind == records.REC_LIBOPEN:
            return []  # handled by the source (it attaches probes)
        if kind == records.REC_HELLO:
            return self._hello(rec)
        if kind == records.REC_EXCHANGE:
            return self._exchange(rec)
        self._count("unknown_record")
        return []

    def _data(self, rec: records.DataHead, payload: bytes) -> list[Event]:
        key = (rec.pid, rec.tid, rec.source, rec.direction)
        limit = self.max_copy if rec.flags & records.FLAG_WIDE else self.peek_copy
        want = min(rec.call_len, limit)
        out: list[Event] = []
        pending = self._pending.get(key)
        if rec.offset == 0 and rec.len >= want and pending is None:
            # the common case: the whole call in one record
            return self._finish(key, _Pending(rec, payload, want), complete=rec.len > 0)
        if rec.offset == 0 or pending is None:
            if pending is not None:  # the rest of the previous call never came
                out += self._finish(key, pending, complete=False)
            pending = _Pending(rec, bytearray(), want)
            self._pending[key] = pending
            if len(self._pending) > _MAX_PENDING:  # threads that died mid-call
                oldest = next(iter(self._pending))
                out += self._finish(oldest, self._pending.pop(oldest), complete=False)
        if rec.len == 0:
            pending.complete = False
        elif rec.offset != len(pending.data):
            pending.complete = False  # a chunk in between was lost
        pending.data += payload
        if rec.offset + max(rec.len, 1) >= want or len(pending.data) >= want:
            del self._pending[key]
            out += self._finish(key, pending, pending.complete)
        return out

    def _finish(self, key, pending: _Pending, complete: bool) -> list[Event]:
        rec = pending.head
        if not complete:
            self._count("incomplete_call")
        payload = bytes(pending.data)
        if rec.source == records.SRC_DNS:
            return self._dns(rec, payload)
        write = rec.direction == records.DIR_WRITE
        tls = rec.source == records.SRC_TLS
        ev = self._process(rec.h)
        ev.update(
            event_type=("TLS_DATA_" if tls else "DATA_") + ("WRITE" if write else "READ"),
            direction="write" if write else "read",
            payload=payload,
            bytes=rec.call_len,
            conn_id=rec.conn_id,
            truncated=bool(rec.flags & records.FLAG_TRUNCATED) or not complete,
        )
        if rec.flags & records.FLAG_HELD:
            ev["held"] = True  # the enforcer in capture gives it its hold_id
        pid = rec.h.pid
        fd = rec.fd
        if tls:
            skey = (pid, rec.conn_id)
            if skey not in self._sni and skey not in self._ssl_checked:
                self._ssl_checked[skey] = True
                known = self.ssl_info(pid, rec.conn_id)
                if known is not None:
                    if known[0] >= 0:
                        self._ssl_fd.setdefault(skey, known[0])
                    if known[1]:
                        self._sni[skey] = known[1]
            if fd < 0:
                fd = self._ssl_fd.get(skey, -1)
            sk = rec.sk
            if fd < 0:
                # libraries doing their own socket I/O (node): the thread's last socket,
                # remembered per SSL* from its first read (a read follows its recv)
                sk = self._ssl_sk.get(skey) or sk
                if sk and not write and skey not in self._ssl_sk:
                    self._ssl_sk[skey] = sk
            sni = self._sni.get(skey)
            if sni:
                ev["sni"] = sni
            conn = self._conn_for(pid, fd, sk)
            if conn is not None and conn.tls is not None:
                conn.tls.plaintext = True
                if conn.tls.sni:
                    ev.setdefault("sni", conn.tls.sni)
            self.plaintext_seen[(pid, ev.get("sni", ""))] = rec.ts_ns
        else:
            conn = self._conn_for(pid, fd, rec.sk)
        if conn is not None:
            conn.plaintext_conn_id = rec.conn_id
            ev.update(conn.fields())
            if "sni" not in ev and conn.dst_ip in self.ip_names:
                ev["dns_name"] = self.ip_names[conn.dst_ip]
        return [ev]

    def _hello(self, rec: records.HelloRec) -> list[Event]:
        """A connection's first write was a ClientHello: its SNI names the connection
        from now on, whatever TLS library made it."""
        try:
            hello = tls_hello.parse(bytes(rec.data[: min(rec.len, records.HELLO_LEN)]))
        except tls_hello.HelloError:
            self._count("hello_undecodable")
            return []
        pid = rec.h.pid
        conn = self._conn_for(pid, rec.fd, 0) or self._by_fd.get((pid, rec.fd)) or Conn()
        conn.tls = TlsConnection(
            pid=pid, process_name=self._process(rec.h)["process_name"], uid=rec.h.uid,
            fd=rec.fd, conn_id=rec.conn_id, sk=conn.sk, hello=hello,
            hello_len=rec.call_len, seen_ns=rec.h.ts_ns,
            timestamp=self._wall_offset + rec.h.ts_ns / 1e9, dst_ip=conn.dst_ip,
            dst_port=conn.dst_port, dns_name=self.ip_names.get(conn.dst_ip, ""))
        if len(self._new_tls) < _MAX_PENDING:
            self._new_tls.append(conn.tls)
        return []

    def _exchange(self, rec: records.ExchangeRec) -> list[Event]:
        """One exchange of a tracked connection ended: its statistics as an event."""
        known = self._by_sk.get(rec.sk)
        if known is not None:
            _pid, _fd, conn, proc_fields = known
            ev: Event = dict(proc_fields)
        else:  # connected before the tracker's tables remembered it
            conn = Conn()
            ev = {"pid": rec.h.pid, "uid": rec.h.uid, "gid": rec.h.gid,
                  "process_name": self._process(rec.h)["process_name"]}
        ev.update(
            event_type="TCP_EXCHANGE",
            timestamp=self._wall_offset + rec.end_ns / 1e9,
            conn_id=rec.conn_id,
            bytes=rec.tx_bytes + rec.rx_bytes,
            exchange=exchange_fields(rec, tls=conn.tls is not None),
            **conn.fields(),
        )
        if conn.plaintext_conn_id:
            ev["plaintext_conn_id"] = conn.plaintext_conn_id
        if conn.tls is not None and conn.tls.sni:
            ev["sni"] = conn.tls.sni
        elif conn.dst_ip in self.ip_names:
            ev["dns_name"] = self.ip_names[conn.dst_ip]
        return [ev]

    def take_tls_connections(self) -> list[TlsConnection]:
        """Connections whose ClientHello was seen since the last call."""
        out, self._new_tls = self._new_tls, []
        return out

    def _dns(self, rec: records.DataHead, payload: bytes) -> list[Event]:
        try:
            msg = dns.decode(payload)
        except dns.DnsError:
            self._count("dns_undecodable")
            return []
        ev = self._process(rec.h)
        ev.update(
            event_type="DNS_ANSWER" if msg.is_response else "DNS_QUERY",
            direction="read" if rec.direction == records.DIR_READ else "write",
            dns_name=msg.name,
            bytes=len(payload),
            conn_id=rec.conn_id,
        )
        if msg.is_response:
            ev["dns_addrs"] = list(msg.addrs)
            for addr in msg.addrs:
                self.ip_names[addr] = msg.name
        conn = self._conn_for(rec.h.pid, rec.fd, 0)
        if conn is not None:
            ev.update(conn.fields())
        return [ev]

    def _connection(self, kind: int, rec: records.ConnRec) -> list[Event]:
        family = rec.family
        if kind == records.REC_CONNECT:
            conn = Conn(dst_ip=ip_text(family, bytes(rec.daddr)), dst_port=rec.dport, sk=rec.sk)
            ev = self._process(rec.h)
            proc_fields = {k: ev[k] for k in ("pid", "tid", "uid", "gid", "process_name",
                                               "cgroup_id", "container_id") if k in ev}
            self._by_sk[rec.sk] = (rec.h.pid, rec.fd, conn, proc_fields)
            if rec.fd >= 0:
                self._by_fd[(rec.h.pid, rec.fd)] = conn
            ev.update(event_type="TCP_CONNECT", conn_id=rec.conn_id, **conn.fields())
            if conn.dst_ip in self.ip_names:
                ev["dns_name"] = self.ip_names[conn.dst_ip]
            return [ev]
        known = self._by_sk.get(rec.sk)
        if known is None:
            return []  # a socket we did not see connecting
        pid, fd, conn, proc_fields = known
        if kind == records.REC_ESTABLISHED:
            conn.src_ip = ip_text(family, bytes(rec.saddr))
            conn.src_port = rec.sport
            conn.dst_ip = ip_text(family, bytes(rec.daddr)) or conn.dst_ip
            conn.dst_port = rec.dport or conn.dst_port
            event_type = "TCP_ESTABLISHED"
            ev = dict(proc_fields, event_type=event_type, conn_id=rec.conn_id, **conn.fields())
        else:
            self._by_sk.pop(rec.sk, None)
            if fd >= 0 and self._by_fd.get((pid, fd)) is conn:
                del self._by_fd[(pid, fd)]
            ev = dict(proc_fields, event_type="TCP_CLOSE", conn_id=rec.conn_id,
                      bytes=rec.bytes_sent + rec.bytes_received, **conn.fields())
        ev["timestamp"] = self._wall_offset + rec.h.ts_ns / 1e9
        if conn.dst_ip in self.ip_names:
            ev["dns_name"] = self.ip_names[conn.dst_ip]
        if conn.tls is not None:
            if conn.tls.sni:
                ev["sni"] = conn.tls.sni
            if kind == records.REC_CLOSE:
                conn.tls.sent_at_close = rec.bytes_sent
        return [ev]

    def flush(self) -> list[Event]:
        """Emit calls whose remaining chunks never came (called at close)."""
        out: list[Event] = []
        for key, pending in list(self._pending.items()):
            del self._pending[key]
            out += self._finish(key, pending, complete=False)
        return out


def exchange_fields(rec: records.ExchangeRec, tls: bool) -> dict[str, Any]:
    """A REC_EXCHANGE's statistics as the plain dict TCP_EXCHANGE events carry (times
    relative to the exchange's start, in microseconds)."""

    def since_start(ns: int) -> int:
        return max(0, (ns - rec.start_ns) // 1000) if ns else 0

    return {
        "index": rec.index, "closing": bool(rec.closing), "tls": tls,
        "tx_bytes": rec.tx_bytes, "tx_calls": rec.tx_calls,
        "rx_bytes": rec.rx_bytes, "rx_calls": rec.rx_calls, "rx_bursts": rec.rx_bursts,
        "burst_min": rec.burst_min, "burst_max": rec.burst_max,
        "burst_size": list(rec.burst_size),
        "first_rx_us": since_start(rec.first_rx_ns), "last_rx_us": since_start(rec.last_rx_ns),
        "end_us": since_start(rec.end_ns),
        "gap_sum_us": rec.gap_sum_us, "gap_sq_us": rec.gap_sq_us,
        "gap_max_us": rec.gap_max_us, "pauses": rec.pauses,
    }


def _conn_from_proc_line(local: str, remote: str, family: int) -> Conn:
    def parse(col: str) -> tuple[str, int]:
        hexaddr, hexport = col.split(":")
        raw = bytes.fromhex(hexaddr)
        # /proc/net/tcp prints each 32-bit word in host (little-endian) order
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        return ip_text(family, raw), int(hexport, 16)

    src_ip, src_port = parse(local)
    dst_ip, dst_port = parse(remote)
    return Conn(src_ip, src_port, dst_ip, dst_port)
