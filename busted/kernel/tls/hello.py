"""Read a TLS ClientHello: the host name (SNI), ALPN and the shape that names its library.

The kernel copies the first write of every TCP connection when it starts like a TLS
handshake record (``0x16 0x03``), at most ``HELLO_LEN`` bytes (bpf/busted.h): that is
the ClientHello, sent in clear by every TLS stack, hooked or not. From it busted knows
where each connection goes (``sni``) whatever library made it (Go, rustls, Bun's
BoringSSL, GnuTLS, Java...), and :mod:`busted.kernel.tls.identify` guesses the library
from its shape.

The input is untrusted and may be cut short (a ClientHello with a post-quantum key share
is ~1.5 KB and the copy is bounded): :func:`parse` reads every field that is whole and
stops at the first one that is not, and says so in ``complete``. Anything that is not a
ClientHello raises :class:`HelloError`.

Layout (RFC 8446 4.1.2): record header (type 22, version, length), handshake header
(type 1, 24-bit length), legacy_version, random[32], session_id<0..32>,
cipher_suites<2..2^16-2>, compression_methods<1..2^8-1>, extensions<8..2^16-1>.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RECORD_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
EXT_KEY_SHARE = 51


class HelloError(ValueError):
    """The bytes are not (the start of) a TLS ClientHello."""


@dataclass
class ClientHello:
    sni: str = ""
    alpn: list[str] = field(default_factory=list)
    legacy_version: int = 0
    versions: list[int] = field(default_factory=list)  # supported_versions (TLS 1.3)
    cipher_suites: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)  # types, in the order sent
    groups: list[int] = field(default_factory=list)
    key_shares: list[int] = field(default_factory=list)  # groups offered a key share
    session_id_len: int = 0
    length: int = 0  # bytes of the whole record (header included) as it says
    complete: bool = False  # every extension was read

    @property
    def max_version(self) -> int:
        real = [v for v in self.versions if not is_grease(v)]
        return max(real) if real else self.legacy_version


def is_grease(value: int) -> bool:
    """RFC 8701 values (0x0a0a, 0x1a1a, ... 0xfafa) that BoringSSL and Chrome sprinkle in."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def looks_like_hello(data: bytes) -> bool:
    """The cheap test the kernel makes too: a handshake record of TLS 1.0-1.3."""
    return len(data) >= 3 and data[0] == RECORD_HANDSHAKE and data[1] == 0x03


class _Reader:
    """Bounds-checked cursor; running out raises _Short."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else min(end, len(data))

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise _Short
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vector(self, len_bytes: int) -> _Reader:
        n = int.from_bytes(self.take(len_bytes), "big")
        if self.pos + n > self.end:
            raise _Short
        sub = _Reader(self.data, self.pos, self.pos + n)
        self.pos += n
        return sub

    def left(self) -> int:
        return self.end - self.pos

    def u16s(self) -> list[int]:
        """Every whole 16-bit value left (one unpack: suites lists are long)."""
        n = self.left() // 2
        out = list(struct.unpack_from(f">{n}H", self.data, self.pos))
        self.pos += 2 * n
        return out


class _Short(Exception):
    """The copy ends inside a field."""


def parse(data: bytes) -> ClientHello:
    """The ClientHello in ``data`` (a TLS record as written to the socket), as far as
    it goes; raises HelloError when it is not one."""
    if not looks_like_hello(data) or len(data) < 6:
        raise HelloError("not a TLS handshake record")
    hello = ClientHello(length=5 + int.from_bytes(data[3:5], "big"))
    if data[5] != HANDSHAKE_CLIENT_HELLO:
        raise HelloError(f"handshake message type {data[5]} is not a ClientHello")
    r = _Reader(data, 6, hello.length)
    try:
        r.u24()  # body length: the copy may end earlier, the record says where it ends
        hello.legacy_version = r.u16()
        if hello.legacy_version >> 8 != 0x03:
            raise HelloError(f"version {hello.legacy_version:#06x} is not TLS")
        r.take(32)  # random
        session = r.vector(1)
        hello.session_id_len = session.left()
        if hello.session_id_len > 32:
            raise HelloError("session id longer than 32 bytes")
        hello.cipher_suites = r.vector(2).u16s()
        r.vector(1)  # compression methods
        if r.pos == hello.length:
            hello.complete = True  # a hello without extensions (old clients)
            return hello
        n = r.u16()
        exts_end = r.pos + n
        while r.pos < exts_end:
            kind = r.u16()
            hello.extensions.append(kind)
            body = r.vector(2)
            _extension(hello, kind, body)
        hello.complete = True
    except _Short:
        pass  # cut short: keep what was whole
    return hello


def _extension(hello: ClientHello, kind: int, body: _Reader) -> None:
    if kind == EXT_SERVER_NAME:
        names = body.vector(2)
        while names.left() >= 3:
            name_type = names.u8()
            name = names.vector(2)
            if name_type == 0 and not hello.sni:
                hello.sni = _host_name(name.take(name.left()))
    elif kind == EXT_ALPN:
        protos = body.vector(2)
        while protos.left() >= 1:
            proto = protos.vector(1)
            hello.alpn.append(proto.take(proto.left()).decode("ascii", "replace"))
    elif kind == EXT_SUPPORTED_VERSIONS:
        hello.versions = body.vector(1).u16s()
    elif kind == EXT_SUPPORTED_GROUPS:
        hello.groups = body.vector(2).u16s()
    elif kind == EXT_KEY_SHARE:
        shares = body.vector(2)
        while shares.left() >= 4:
            hello.key_shares.append(shares.u16())
            shares.vector(2)


def _host_name(raw: bytes) -> str:
    """A DNS name as sent; anything else (binary, spaces) is refused rather than passed
    on to events, where it would be trusted as a destination."""
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        return ""
    if not name or len(name) > 253 or not all(c.isalnum() or c in "-._" for c in name):
        return ""
    return name.lower().rstrip(".")
