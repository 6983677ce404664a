"""ClientHello parsing, library guesses, and the tracker's use of REC_HELLO records.

The hellos are real: each file in tests/fixtures/tls_hello was written by the client its
name says (README.md there has the commands). Cut-short copies and garbage must never
raise anything but HelloError, and never invent a host name.
"""

from __future__ import annotations

import ctypes as ct
import random
import socket
import struct
from pathlib import Path

import pytest

from busted.kernel import records
from busted.kernel.tls import hello, identify
from busted.kernel.tracker import Tracker

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tls_hello"

# file -> (SNI, ALPN, library by shape)
EXPECTED = {
    "openssl_s_client": ("api.openai.com", ["h2", "http/1.1"], "OpenSSL"),
    "python_ssl": ("api.anthropic.com", ["http/1.1"], "OpenSSL"),
    "curl": ("api.openai.com", ["h2", "http/1.1"], "OpenSSL"),
    "node": ("api.openai.com", ["http/1.1"], "OpenSSL"),
    "gnutls_cli": ("api.openai.com", ["http/1.1"], "GnuTLS"),
    "go": ("api.openai.com", ["h2", "http/1.1"], "Go"),
    "java": ("api.openai.com", ["h2", "http/1.1"], "Java"),
    "bun": ("api.openai.com", ["http/1.1"], "BoringSSL"),
    "codex": ("api.openai.com", ["h2", "http/1.1"], "rustls"),
}


def sample(name: str) -> bytes:
    return (FIXTURES / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_hellos_parse_whole(name):
    data = sample(name)
    parsed = hello.parse(data)
    sni, alpn, _ = EXPECTED[name]
    assert (parsed.sni, parsed.alpn) == (sni, alpn)
    assert parsed.complete and parsed.length == len(data)
    assert parsed.max_version == 0x0304  # every client offers TLS 1.3
    assert parsed.session_id_len == 32 and parsed.cipher_suites and parsed.extensions


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_hellos_name_their_library(name):
    assert identify.from_hello(hello.parse(sample(name))).library == EXPECTED[name][2]


def test_post_quantum_hellos_are_large_and_fit_the_kernel_copy():
    for name in ("bun", "codex"):
        data = sample(name)
        assert 1400 < len(data) <= records.HELLO_LEN
        assert 0x11EC in hello.parse(data).key_shares  # X25519MLKEM768


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_prefix_parses_or_is_refused_cleanly(name):
    data = sample(name)
    whole = hello.parse(data)
    for cut in range(len(data)):
        try:
            part = hello.parse(data[:cut])
        except hello.HelloError:
            assert cut < 6
            continue
        assert not part.complete
        assert part.sni in ("", whole.sni)  # never a made-up or half name
        assert part.cipher_suites == whole.cipher_suites[: len(part.cipher_suites)]


def test_sni_survives_a_cut_when_it_comes_early_and_not_when_late():
    bun, codex = sample("bun"), sample("codex")
    assert hello.parse(bun[:300]).sni == "api.openai.com"  # server_name is bun's 1st ext
    cut = hello.parse(codex[:600])  # rustls sends server_name after its key share
    assert cut.sni == "" and not cut.complete


@pytest.mark.parametrize("data", [
    b"", b"\x16", b"\x16\x03\x01", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x17\x03\x03\x00\x10" + b"\0" * 16,  # application data
    b"\x16\x03\x03\x00\x04\x02\x00\x00\x00",  # a ServerHello
    b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c\x01\x00" + b"\0" * 40,  # legacy_version 0x0100
])
def test_what_is_not_a_client_hello_is_refused(data):
    with pytest.raises(hello.HelloError):
        hello.parse(data)


def test_garbage_after_a_hello_header_never_raises_anything_else():
    rng = random.Random(1234)
    for _ in range(3000):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        data = b"\x16\x03\x01" + struct.pack(">H", rng.randrange(0, 400)) + b"\x01" + body
        try:
            parsed = hello.parse(data)
        except hello.HelloError:
            continue
        assert all(c.isalnum() or c in "-._" for c in parsed.sni)


def _hello(suites: list[int], extensions: list[tuple[int, bytes]]) -> bytes:
    """A ClientHello record from its parts (for shapes no client here produces)."""
    exts = b"".join(struct.pack(">HH", t, len(body)) + body for t, body in extensions)
    body = (b"\x03\x03" + b"\x11" * 32 + b"\x20" + b"\x22" * 32
            + struct.pack(">H", 2 * len(suites)) + b"".join(struct.pack(">H", s) for s in suites)
            + b"\x01\x00" + struct.pack(">H", len(exts)) + exts)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake


def _sni(name: bytes) -> tuple[int, bytes]:
    entry = b"\x00" + struct.pack(">H", len(name)) + name
    return 0, struct.pack(">H", len(entry)) + entry


def test_a_host_name_that_is_not_a_dns_name_is_dropped():
    assert hello.parse(_hello([0x1301], [_sni(b"API.OpenAI.com.")])).sni == "api.openai.com"
    assert hello.parse(_hello([0x1301], [_sni(b"evil host\n")])).sni == ""
    assert hello.parse(_hello([0x1301], [_sni(b"\xff\xfe")])).sni == ""


def test_grease_marks_boringssl_and_nss_has_its_own_order():
    grease = _hello([0x5A5A, 0x1301, 0x1302, 0x1303], [(0x3A3A, b""), _sni(b"a.example")])
    assert hello.is_grease(0x5A5A) and not hello.is_grease(0x1301)
    assert identify.from_hello(hello.parse(grease)).library == "BoringSSL"
    nss = _hello([0x1301, 0x1303, 0x1302, 0xC02B], [_sni(b"a.example"), (34, b"\x00\x00")])
    assert identify.from_hello(hello.parse(nss)).library == "NSS"
    assert identify.from_hello(hello.parse(_hello([0x002F], []))).library == ""


def test_files_beat_a_shape_they_do_not_confirm(tmp_path):
    """A process that runs only GnuTLS is GnuTLS, whatever its hello looks like; a hello
    whose library the process carries is named with both reasons."""
    files = ("/usr/bin/gnutls-cli", {"/usr/lib/x86_64-linux-gnu/libgnutls.so.30"})
    who = identify.identify(hello.parse(sample("curl")), 1, str(tmp_path), files)
    assert who.library == "GnuTLS" and "libgnutls" in who.why
    both = ("/usr/bin/curl", {"/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
                              "/usr/lib/x86_64-linux-gnu/libssl.so.3"})
    who = identify.identify(hello.parse(sample("curl")), 1, str(tmp_path), both)
    assert who.library == "OpenSSL" and "libssl.so.3" in who.why
    nothing = identify.identify(hello.parse(sample("java")), 1, str(tmp_path), ("", set()))
    assert nothing.library == "Java" and "shape" in nothing.why


# --- the tracker: REC_HELLO -> SNI on the connection's events -------------------------

PID, FD, SK = 777, 9, 0xFFFF_8880_0000_0042


def _head(kind: int) -> records.RecHead:
    return records.RecHead(ts_ns=5_000_000_000, type=kind, pid=PID, tid=PID, uid=0, gid=0,
                           cgroup_id=1, comm=b"gnutls-cli")


def _conn_rec(kind: int, sent: int = 0) -> bytes:
    rec = records.ConnRec(h=_head(kind), sk=SK, conn_id=512, fd=FD, family=socket.AF_INET,
                          dport=443, bytes_sent=sent, bytes_received=100)
    ct.memmove(ct.addressof(rec.daddr), bytes([127, 66, 1, 2]), 4)
    return bytes(rec)


def _hello_rec(data: bytes) -> bytes:
    rec = records.HelloRec(h=_head(records.REC_HELLO), conn_id=512, call_len=len(data),
                           len=len(data), fd=FD)
    ct.memmove(ct.addressof(rec.data), data, len(data))
    return bytes(rec)


def test_the_hello_names_every_later_event_of_its_connection(tmp_path):
    t = Tracker(max_copy=65536, proc=str(tmp_path), clock=lambda: 100.0, monotonic_ns=lambda: 0)
    assert t.feed(_conn_rec(records.REC_CONNECT))[0].get("sni") is None
    assert t.feed(_hello_rec(sample("gnutls_cli"))) == []
    [seen] = t.take_tls_connections()
    assert (seen.pid, seen.sni, seen.dst_ip, seen.dst_port, seen.sk) == (
        PID, "api.openai.com", "127.66.1.2", 443, SK)
    assert seen.hello_len == len(sample("gnutls_cli")) and t.take_tls_connections() == []
    # plaintext tied to the connection (fd known) carries the SNI and marks it seen
    data = records.DataRec(h=_head(records.REC_DATA), conn_id=0xABC, sk=0, call_len=4,
                           offset=0, len=4, fd=FD, source=records.SRC_TLS,
                           direction=records.DIR_WRITE)
    [event] = t.feed(bytes(data) + b"POST")
    assert event["sni"] == "api.openai.com" and seen.plaintext
    assert t.plaintext_seen[(PID, "api.openai.com")] == 5_000_000_000
    [closed] = t.feed(_conn_rec(records.REC_CLOSE, sent=4000))
    assert closed["event_type"] == "TCP_CLOSE" and closed["sni"] == "api.openai.com"
    assert seen.sent_at_close == 4000


def test_a_first_write_that_is_not_a_hello_is_counted_and_dropped(tmp_path):
    t = Tracker(max_copy=65536, proc=str(tmp_path))
    t.feed(_conn_rec(records.REC_CONNECT))
    assert t.feed(_hello_rec(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00")) == []
    assert t.errors["hello_undecodable"] == 1 and t.take_tls_connections() == []
