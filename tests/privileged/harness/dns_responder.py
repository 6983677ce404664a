"""A UDP DNS responder on ``address:53`` answering A queries from a fixed table.

Unknown names get NXDOMAIN; other query types get an empty answer. Every question is
recorded (name, type, peer) so a test can tell what really reached the responder. The
module also builds queries (:func:`build_query`) and reads answers (:func:`parse_answer`)
for the Python DNS client.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass

TYPE_A = 1
CLASS_IN = 1


@dataclass
class Question:
    name: str
    qtype: int
    peer: tuple[str, int]
    received_at: float


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def decode_name(packet: bytes, offset: int) -> tuple[str, int]:
    """Read a (possibly compressed) name; return it and the offset just after it."""
    labels, end = [], None
    for _ in range(128):  # bounds pointer loops in hostile packets
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = struct.unpack_from("!H", packet, offset)[0] & 0x3FFF
            continue
        offset += 1
        if length == 0:
            break
        labels.append(packet[offset : offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels), (end if end is not None else offset)


def build_query(name: str, qid: int = 0x4242, qtype: int = TYPE_A) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD set, one question
    return header + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def parse_answer(packet: bytes) -> tuple[int, list[str]]:
    """Return (rcode, IPv4 addresses of the A records)."""
    _qid, flags, qdcount, ancount, _, _ = struct.unpack_from("!HHHHHH", packet)
    offset = 12
    for _ in range(qdcount):
        _, offset = decode_name(packet, offset)
        offset += 4
    addrs = []
    for _ in range(ancount):
        _, offset = decode_name(packet, offset)
        rtype, _rclass, _ttl, rdlen = struct.unpack_from("!HHIH", packet, offset)
        offset += 10
        if rtype == TYPE_A and rdlen == 4:
            addrs.append(socket.inet_ntoa(packet[offset : offset + 4]))
        offset += rdlen
    return flags & 0xF, addrs


class DnsResponder:
    """Answers A queries for ``table`` (name -> IPv4) on ``address:port`` (UDP)."""

    def __init__(self, address: str, table: dict[str, str], port: int = 53) -> None:
        self.address = address
        self.port = port
        self.table = {name.lower().rstrip("."): ip for name, ip in table.items()}
        self.questions: list[Question] = []
        self._sock: socket.socket | None = None
        self._stopping = False

    def start(self) -> DnsResponder:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, self.port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"cannot bind DNS responder on {self.address}:{self.port}: {exc}") from exc
        self._sock = sock
        threading.Thread(target=self._loop, name="dns", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()

    def _loop(self) -> None:
        assert self._sock is not None
        while not self._stopping:
            try:
                packet, peer = self._sock.recvfrom(4096)
            except OSError:
                return
            with contextlib.suppress(Exception):  # a malformed packet is just ignored
                self._sock.sendto(self._answer(packet, peer), peer)

    def _answer(self, packet: bytes, peer: tuple[str, int]) -> bytes:
        qid, flags, qdcount, _, _, _ = struct.unpack_from("!HHHHHH", packet)
        name, offset = decode_name(packet, 12)
        qtype, qclass = struct.unpack_from("!HH", packet, offset)
        self.questions.append(Question(name, qtype, peer, time.time()))
        question = packet[12 : offset + 4]
        ip = self.table.get(name.lower())
        rd = flags & 0x0100
        if ip is None:
            return struct.pack("!HHHHHH", qid, 0x8080 | rd | 3, 1, 0, 0, 0) + question
        answers = b""
        if qtype == TYPE_A and qclass == CLASS_IN:
            answers = b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, 60, 4) + socket.inet_aton(ip)
        count = 1 if answers else 0
        return struct.pack("!HHHHHH", qid, 0x8480 | rd, 1, count, 0, 0) + question + answers
