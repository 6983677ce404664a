"""Python mirror of the records in ``bpf/busted.h`` and their decoding.

The kernel writes these structs into the ring buffer; :func:`decode` turns one raw
record into its ctypes object (and, for payload records, the bytes that follow the
fixed header). ``tests/unit/kernel/test_records_sync.py`` parses the C header and
checks every size and offset here against it: change both files together.
"""

from __future__ import annotations

import ctypes as ct
import struct
from pathlib import Path

HEADER_PATH = Path(__file__).resolve().parents[2] / "bpf" / "busted.h"
ENFORCE_PATH = HEADER_PATH.parent / "enforce.bpf.c"  # the connect blocker's own structs

COMM_LEN = 16
SNI_LEN = 128
PATH_LEN = 256

REC_DATA = 1
REC_SNI = 2
REC_SSL_FREE = 3
REC_CONNECT = 4
REC_ESTABLISHED = 5
REC_CLOSE = 6
REC_EXEC = 7
REC_SSL_FD = 8
REC_EXIT = 9
REC_LIBOPEN = 10
REC_HELLO = 11
REC_EXCHANGE = 12

SRC_TLS = 1
SRC_PLAIN = 2
SRC_DNS = 3
SRC_HELLO = 4  # a watch's source only: a TCP socket whose first write is not seen yet
HELLO_LEN = 2048  # bytes of a ClientHello the kernel copies at most

DIR_WRITE = 0
DIR_READ = 1

FLAG_TRUNCATED = 1
LIB_HELD, LIB_WRITING = 1, 2  # rec_head.held of a REC_LIBOPEN
VERDICT_SKIP, VERDICT_NO_HOLD = 1, 2  # the verdicts map: copy no more / never hold its writes
FLAG_HELD = 2  # sent at the write's entry; the writer is stopped until its verdict
FLAG_WIDE = 4  # the connection carries requests: the call is copied up to MAX_COPY

LOST_RINGBUF = 0
LOST_READ = 1
LOST_STASH = 2
LOST_SLOTS = 4
LOST_NAMES = {LOST_RINGBUF: "ringbuf_full", LOST_READ: "read_failed", LOST_STASH: "stash_full"}


class RecHead(ct.Structure):
    _fields_ = [
        ("ts_ns", ct.c_uint64),
        ("type", ct.c_uint32),
        ("pid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("gid", ct.c_uint32),
        ("held", ct.c_uint32),  # REC_LIBOPEN: LIB_HELD or LIB_WRITING
        ("cgroup_id", ct.c_uint64),
        ("comm", ct.c_char * COMM_LEN),
    ]


class DataRec(ct.Structure):
    """``struct data_rec`` without its trailing ``data[CHUNK_SIZE]``: ``len`` bytes follow."""

    _fields_ = [
        ("h", RecHead),
        ("conn_id", ct.c_uint64),
        ("sk", ct.c_uint64),
        ("call_len", ct.c_uint32),
        ("offset", ct.c_uint32),
        ("len", ct.c_uint32),
        ("fd", ct.c_int32),
        ("source", ct.c_uint8),
        ("direction", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("pad1", ct.c_uint8 * 5),
    ]


class SniRec(ct.Structure):
    _fields_ = [("h", RecHead), ("ssl", ct.c_uint64), ("name", ct.c_char * SNI_LEN)]


class SslRec(ct.Structure):
    _fields_ = [("h", RecHead), ("ssl", ct.c_uint64), ("fd", ct.c_int32), ("pad2", ct.c_uint32)]


class ConnRec(ct.Structure):
    _fields_ = [
        ("h", RecHead),
        ("sk", ct.c_uint64),
        ("conn_id", ct.c_uint64),
        ("bytes_sent", ct.c_uint64),
        ("bytes_received", ct.c_uint64),
        ("fd", ct.c_int32),
        ("family", ct.c_uint16),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("pad3", ct.c_uint16),
        ("pad4", ct.c_uint32),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
    ]


class PathRec(ct.Structure):
    _fields_ = [("h", RecHead), ("path", ct.c_char * PATH_LEN)]


class HelloRec(ct.Structure):
    """The first write of a TCP connection, when it starts like a TLS handshake record."""

    _fields_ = [
        ("h", RecHead),
        ("conn_id", ct.c_uint64),
        ("call_len", ct.c_uint32),
        ("len", ct.c_uint32),
        ("fd", ct.c_int32),
        ("pad6", ct.c_uint32),
        ("data", ct.c_uint8 * HELLO_LEN),
    ]


class ExchangeRec(ct.Structure):
    """One request/response exchange of a TCP connection (busted.ml's features)."""

    _fields_ = [
        ("h", RecHead),
        ("sk", ct.c_uint64),
        ("conn_id", ct.c_uint64),
        ("start_ns", ct.c_uint64),
        ("first_rx_ns", ct.c_uint64),
        ("last_rx_ns", ct.c_uint64),
        ("end_ns", ct.c_uint64),
        ("tx_bytes", ct.c_uint64),
        ("rx_bytes", ct.c_uint64),
        ("gap_sum_us", ct.c_uint64),
        ("gap_sq_us", ct.c_uint64),
        ("tx_calls", ct.c_uint32),
        ("rx_calls", ct.c_uint32),
        ("rx_bursts", ct.c_uint32),
        ("burst_min", ct.c_uint32),
        ("burst_max", ct.c_uint32),
        ("gap_max_us", ct.c_uint32),
        ("pauses", ct.c_uint32),
        ("index", ct.c_uint32),
        ("closing", ct.c_uint32),
        ("pad7", ct.c_uint32),
        ("burst_size", ct.c_uint16 * 4),
    ]


class SslInfo(ct.Structure):
    _fields_ = [("fd", ct.c_int32), ("pad5", ct.c_uint32), ("sni", ct.c_char * SNI_LEN)]


class ConnKey(ct.Structure):
    _fields_ = [("pid", ct.c_uint32), ("pad", ct.c_uint32), ("conn_id", ct.c_uint64)]


class DstKey(ct.Structure):
    """The connect blocker's key (bpf/enforce.bpf.c): port 0 means every port."""

    _fields_ = [("family", ct.c_uint32), ("port", ct.c_uint16), ("pad", ct.c_uint16),
                ("addr", ct.c_uint8 * 16)]


class BlockRec(ct.Structure):
    """A connect the blocker refused (or, with --dry-run, would have refused)."""

    _fields_ = [("pid", ct.c_uint32), ("uid", ct.c_uint32), ("family", ct.c_uint32),
                ("port", ct.c_uint16), ("refused", ct.c_uint16), ("addr", ct.c_uint8 * 16),
                ("comm", ct.c_char * COMM_LEN)]


# The registry the sync test (tests/unit/kernel/test_records_sync.py) walks: every struct
# of bpf/busted.h and bpf/enforce.bpf.c is mirrored here or named kernel-only, and every
# constant above that has a #define of the same name in busted.h must equal it.
# C struct name -> mirror; data_rec's flexible tail is checked apart.
MIRRORS: dict[str, type[ct.Structure]] = {
    "rec_head": RecHead,
    "data_rec": DataRec,
    "sni_rec": SniRec,
    "ssl_rec": SslRec,
    "conn_rec": ConnRec,
    "conn_key": ConnKey,
    "path_rec": PathRec,
    "hello_rec": HelloRec,
    "exchange_rec": ExchangeRec,
    "ssl_info": SslInfo,
}
ENFORCE_MIRRORS: dict[str, type[ct.Structure]] = {"dst_key": DstKey, "block_rec": BlockRec}
KERNEL_ONLY = frozenset({"fd_key", "watch"})  # map keys and values Python never reads

DATA_HEADER_SIZE = ct.sizeof(DataRec)

_BY_TYPE: dict[int, type[ct.Structure]] = {
    REC_SNI: SniRec,
    REC_SSL_FREE: SslRec,
    REC_SSL_FD: SslRec,
    REC_CONNECT: ConnRec,
    REC_ESTABLISHED: ConnRec,
    REC_CLOSE: ConnRec,
    REC_EXEC: RecHead,
    REC_EXIT: RecHead,
    REC_LIBOPEN: PathRec,
    REC_HELLO: HelloRec,
    REC_EXCHANGE: ExchangeRec,
}


# The payload header again as a struct.Struct: decoding it is the per-record hot path
# (~1 us here against ~5 us through ctypes). Same layout as DataRec (checked by the
# sync test).
DATA_STRUCT = struct.Struct("<QIIIIIIQ16sQQIIIiBBB5x")


class DataHead:
    """A decoded payload-record header; ``h`` is itself so it reads like DataRec."""

    __slots__ = ("ts_ns", "type", "pid", "tid", "uid", "gid", "cgroup_id", "comm", "conn_id",
                 "sk", "call_len", "offset", "len", "fd", "source", "direction", "flags")

    def __init__(self, raw: bytes) -> None:
        (self.ts_ns, self.type, self.pid, self.tid, self.uid, self.gid, _pad, self.cgroup_id,
         self.comm, self.conn_id, self.sk, self.call_len, self.offset, self.len, self.fd,
         self.source, self.direction, self.flags) = DATA_STRUCT.unpack_from(raw)

    @property
    def h(self) -> DataHead:
        return self


class RecordError(ValueError):
    """A ring-buffer record is shorter than its type says or has an unknown type."""


def record_type(raw: bytes) -> int:
    if len(raw) < ct.sizeof(RecHead):
        raise RecordError(f"record of {len(raw)} bytes is shorter than its header")
    return int.from_bytes(raw[8:12], "little")


def decode(raw: bytes) -> tuple[ct.Structure | DataHead, bytes]:
    """Decode one ring-buffer record into (struct, payload bytes)."""
    kind = record_type(raw)
    if kind == REC_DATA:
        if len(raw) < DATA_HEADER_SIZE:
            raise RecordError("payload record shorter than its header")
        rec = DataHead(raw)
        return rec, raw[DATA_HEADER_SIZE : DATA_HEADER_SIZE + rec.len]
    cls = _BY_TYPE.get(kind)
    if cls is None:
        raise RecordError(f"unknown record type {kind}")
    if len(raw) < ct.sizeof(cls):
        raise RecordError(f"record type {kind} is {len(raw)} bytes, expected {ct.sizeof(cls)}")
    return cls.from_buffer_copy(raw, 0), b""


def comm(head: RecHead | DataHead) -> str:
    return head.comm.split(b"\0", 1)[0].decode("utf-8", "replace")
