"""DNS wire decoding of what the kernel copies from port 53."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from busted.kernel import dns


def test_query_name_and_type():
    msg = dns.decode(dns.encode_query("api.openai.com", dns.TYPE_AAAA, txid=7))
    assert (msg.name, msg.qtype, msg.txid, msg.is_response) == ("api.openai.com", dns.TYPE_AAAA, 7, False)
    assert msg.addrs == []


def test_answer_addresses_v4_and_v6():
    query = dns.encode_query("api.anthropic.com")
    msg = dns.decode(dns.encode_answer(query, ["160.79.104.10", "2607:6bc0::10"]))
    assert msg.is_response and msg.name == "api.anthropic.com"
    assert msg.addrs == ["160.79.104.10", "2607:6bc0::10"]


def test_cname_then_a_with_compression():
    query = dns.encode_query("chat.example.com")
    header = struct.pack("!6H", 0x1234, 0x8180, 1, 2, 0, 0)
    question = query[12:]
    target = b"\x04edge\xc0\x11"  # edge.example.com, pointing into the question
    cname = struct.pack("!HHHIH", 0xC00C, dns.TYPE_CNAME, 1, 60, len(target)) + target
    cname_at = 12 + len(question)
    a = struct.pack("!HHHIH", 0xC000 | (cname_at + 12), dns.TYPE_A, 1, 60, 4) + bytes([1, 2, 3, 4])
    msg = dns.decode(header + question + cname + a)
    assert msg.name == "chat.example.com"
    assert msg.addrs == ["1.2.3.4"]


@pytest.mark.parametrize("bad", [b"", b"\0" * 11, struct.pack("!6H", 1, 0, 0, 0, 0, 0)])
def test_short_or_empty_messages_raise(bad):
    with pytest.raises(dns.DnsError):
        dns.decode(bad)


def test_pointer_loop_is_cut():
    msg = struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c"
    with pytest.raises(dns.DnsError):
        dns.decode(msg)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data):
    try:
        dns.decode(data)
    except dns.DnsError:
        pass
