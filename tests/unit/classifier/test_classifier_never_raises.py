"""Property: classify() and the reassembler answer every input without raising."""

# ruff: noqa: E501  (protocol samples and expectation tables read best one per line)
from __future__ import annotations

from classifier_corpus import CORPUS, load_manifest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from busted.classifier import classify, classify_unguarded, context_for
from busted.classifier.reassembly import Reassembler
from busted.schema import CONTENT_CLASSES

SEEDS = [(CORPUS / c["file"]).read_bytes() for c in load_manifest()]
SEEDS = [s for s in SEEDS if s]
PREFIXES = [b"POST /v1/chat/completions HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00", b"data: ", b'{"jsonrpc":"2.0","method":"', b"Transfer-Encoding: chunked\r\n\r\n"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus file cut, spliced, with bytes flipped, or plain random bytes."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    if choice == 1:
        a = draw(st.integers(0, len(data)))
        b = draw(st.integers(a, len(data)))
        return bytes(data[a:b])
    if choice == 2:
        for _ in range(draw(st.integers(1, 20))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    return (
        draw(st.sampled_from(PREFIXES))
        + draw(st.binary(max_size=512))
        + bytes(data[: draw(st.integers(0, len(data)))])
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(), direction=st.sampled_from(["write", "read"]),
       sni=st.one_of(st.none(), st.sampled_from(["api.openai.com", "example.com", ""])),
       dst=st.one_of(st.none(), st.sampled_from(["127.0.0.1:11434", "[::1]:443", "garbage"])))  # fmt: skip
def test_classify_never_raises(data: bytes, direction: str, sni: str | None, dst: str | None) -> None:
    # The internal entry point: classify() itself also has a catch-all, which would
    # hide a bug from this test.
    got = classify_unguarded(data, direction, context_for(sni, dst))
    assert got == classify(data, direction, sni, dst)
    assert got.get("content_class", "UNKNOWN") in CONTENT_CLASSES
    assert isinstance(got.get("tls_payload", ""), str)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(mutated(), st.sampled_from(["write", "read"]), st.integers(0, 3), st.booleans()),
        max_size=12,
    )
)
def test_reassembler_never_raises(pieces: list[tuple[bytes, str, int, bool]]) -> None:
    r = Reassembler(max_conn_bytes=8192, max_total_bytes=32768)
    for i, (data, direction, conn, truncated) in enumerate(pieces):
        r.feed(
            {"pid": 1, "conn_id": conn, "direction": direction, "payload": data, "truncated": truncated},
            now=float(i),
        )
        assert r.buffered_bytes <= 32768 + 8192
    r.expire(1e9)
    r.flush_all()
    assert r.buffered_bytes == 0
    assert not [k for k in r.stats if k.startswith("classify_error")]
