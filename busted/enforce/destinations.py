"""Destinations a policy blocks outright: the ``block_destinations`` set.

A policy names destinations whose NEW connections are refused under ``--enforce``::

    package busted
    block_destinations contains "api.deepseek.com"      # every port
    block_destinations contains "api.mistral.ai:443"    # one port
    block_destinations contains "203.0.113.7"           # an IPv4 address
    block_destinations contains "[2001:db8::7]:443"     # an IPv6 address and port

The policy worker evaluates the set (without input) at load and at every reload,
resolves host names through the host's resolver, and sends the list to capture, which
fills the kernel's deny map (``bpf/enforce.bpf.c``). Capture also adds the addresses of
every DNS answer for a blocked name, so names that resolve differently later (round
robin, a CDN) stay blocked from the first answer it sees on.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class DestinationError(ValueError):
    """An entry that is neither an address nor a host name, with an optional port."""


@dataclass(frozen=True, slots=True)
class Destination:
    text: str  # as the policy wrote it
    host: str = ""  # lower-case name, "" for an address
    ip: str = ""  # "" for a name
    port: int = 0  # 0: every port

    def as_dict(self, addrs: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "host": self.host, "ip": self.ip, "port": self.port}
        if addrs is not None:
            out["addrs"] = addrs
        return out


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise DestinationError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)


def parse(entry: Any) -> Destination:
    """One ``block_destinations`` entry -> Destination; DestinationError says why not."""
    if not isinstance(entry, str) or not entry.strip():
        raise DestinationError(f"{entry!r}: expected a host name or an address, as a string")
    text = entry.strip()
    body, port = text, 0
    if text.startswith("["):  # [v6]:port
        close = text.find("]")
        if close < 0:
            raise DestinationError(f"{entry!r}: missing ']' after the IPv6 address")
        body, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise DestinationError(f"{entry!r}: expected ':port' after ']'")
            port = _port(rest[1:], entry)
    elif text.count(":") == 1:
        body, raw_port = text.split(":")
        port = _port(raw_port, entry)
    try:
        return Destination(text, ip=str(ipaddress.ip_address(body)), port=port)
    except ValueError:
        pass
    host = body.lower().rstrip(".")
    if not _HOST.match(host) or host.replace(".", "").isdigit():
        raise DestinationError(f"{entry!r}: not a host name or an IP address")
    return Destination(text, host=host, port=port)


def resolve(host: str) -> list[str]:
    """The addresses the host's resolver gives for a name ([] when it gives none)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    out: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        addr = str(sockaddr[0])
        if addr not in out:
            out.append(addr)
    return out
