"""DNS wire-format decoding (RFC 1035) of what the kernel copied from UDP port 53.

Only what capture needs: the question name and type, and for answers the A / AAAA
addresses (following CNAME chains is unnecessary: every A/AAAA in the answer section
belongs to the queried name's resolution). Untrusted input: every length and pointer
is bounds-checked, compression loops are cut, and failures raise :class:`DnsError`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

TYPE_A = 1
TYPE_CNAME = 5
TYPE_AAAA = 28
_MAX_POINTER_JUMPS = 16


class DnsError(ValueError):
    """The bytes are not a DNS message we can read."""


@dataclass
class DnsMessage:
    txid: int
    is_response: bool
    rcode: int
    name: str  # first question's name, without the trailing dot
    qtype: int
    addrs: list[str] = field(default_factory=list)  # A/AAAA answers


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """Read a possibly compressed name at pos; return (name, position after it)."""
    labels: list[str] = []
    jumps = 0
    end = -1
    while True:
        if pos >= len(msg):
            raise DnsError("name runs past the message")
        length = msg[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsError("truncated compression pointer")
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > _MAX_POINTER_JUMPS:
                raise DnsError("compression pointer loop")
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        if length & 0xC0:
            raise DnsError("unsupported label type")
        label = msg[pos + 1 : pos + 1 + length]
        if len(label) != length:
            raise DnsError("label runs past the message")
        labels.append(label.decode("ascii", "replace"))
        pos += 1 + length
    return ".".join(labels), (end if end >= 0 else pos)


def decode(msg: bytes) -> DnsMessage:
    """Decode a DNS query or response (UDP payload, no TCP length prefix)."""
    if len(msg) < 12:
        raise DnsError("shorter than a DNS header")
    txid, flags, qdcount, ancount, _ns, _ar = struct.unpack_from("!6H", msg, 0)
    if qdcount == 0:
        raise DnsError("no question")
    name, pos = _read_name(msg, 12)
    if pos + 4 > len(msg):
        raise DnsError("truncated question")
    qtype, _qclass = struct.unpack_from("!HH", msg, pos)
    pos += 4
    for _ in range(qdcount - 1):  # rare: skip further questions
        _, pos = _read_name(msg, pos)
        pos += 4
    out = DnsMessage(txid, bool(flags & 0x8000), flags & 0xF, name, qtype)
    if not out.is_response:
        return out
    for _ in range(ancount):
        try:
            _, pos = _read_name(msg, pos)
        except DnsError:
            break  # a truncated answer section still yields what came before
        if pos + 10 > len(msg):
            break
        rtype, _rclass, _ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
        pos += 10
        rdata = msg[pos : pos + rdlen]
        pos += rdlen
        if len(rdata) != rdlen:
            break
        if rtype == TYPE_A and rdlen == 4:
            out.addrs.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == TYPE_AAAA and rdlen == 16:
            out.addrs.append(str(ipaddress.IPv6Address(rdata)))
    return out


def encode_query(name: str, qtype: int = TYPE_A, txid: int = 0x1234) -> bytes:
    """Build a query (tests and the local responder use it)."""
    wire = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.strip(".").split(".") if p)
    return struct.pack("!6H", txid, 0x0100, 1, 0, 0, 0) + wire + b"\0" + struct.pack("!HH", qtype, 1)


def encode_answer(query: bytes, addrs: list[str], ttl: int = 60) -> bytes:
    """Answer a query with A/AAAA records pointing back at its name (tests)."""
    q = decode(query)
    _, qend = _read_name(query, 12)
    question = query[12 : qend + 4]
    answers = b""
    for addr in addrs:
        ip = ipaddress.ip_address(addr)
        rtype = TYPE_A if ip.version == 4 else TYPE_AAAA
        answers += struct.pack("!HHHIH", 0xC00C, rtype, 1, ttl, len(ip.packed)) + ip.packed
    header = struct.pack("!6H", q.txid, 0x8180, 1, len(addrs), 0, 0)
    return header + question + answers
