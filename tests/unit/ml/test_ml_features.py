"""Exchange records -> TCP_EXCHANGE events -> feature vectors and labelled rows."""

from __future__ import annotations

import ctypes as ct
import socket

from busted.kernel import records
from busted.kernel.tracker import Tracker
from busted.ml import labels
from busted.ml.features import FEATURES, judgeable, vector

PID, SK, SSL = 4242, 0xFFFF_8880_0000_0001, 0x5555_0000_1000


def head(kind: int, ts_ns: int = 1_000_000_000) -> records.RecHead:
    return records.RecHead(ts_ns=ts_ns, type=kind, pid=PID, tid=PID, uid=1000, gid=1000,
                           cgroup_id=77, comm=b"wget")


def connect() -> bytes:
    rec = records.ConnRec(h=head(records.REC_CONNECT), sk=SK, conn_id=256, fd=7,
                          family=socket.AF_INET, dport=443)
    ct.memmove(ct.addressof(rec.daddr), bytes([10, 9, 8, 7]), 4)
    return bytes(rec)


def exchange(index: int, **stats) -> bytes:
    """A stream: 50 bursts 20 ms apart, the first after 800 ms."""
    base = 5_000_000_000
    fields = dict(sk=SK, conn_id=256, start_ns=base, first_rx_ns=base + 800_000_000,
                  last_rx_ns=base + 800_000_000 + 49 * 20_000_000, end_ns=base + 1_790_000_000,
                  tx_bytes=1800, rx_bytes=50 * 180, gap_sum_us=49 * 20_000,
                  gap_sq_us=49 * 20_000 ** 2, tx_calls=2, rx_calls=100, rx_bursts=50,
                  burst_min=150, burst_max=260, gap_max_us=20_000, pauses=0, index=index,
                  closing=0)
    fields.update(stats)
    rec = records.ExchangeRec(h=head(records.REC_EXCHANGE, fields["end_ns"]), **fields)
    rec.burst_size[:] = [0, 50, 0, 0]
    return bytes(rec)


def tracker(tmp_path) -> Tracker:
    return Tracker(max_copy=65536, proc=str(tmp_path), clock=lambda: 100.0, monotonic_ns=lambda: 0)


def test_an_exchange_record_becomes_an_event_with_its_statistics(tmp_path):
    t = tracker(tmp_path)
    t.feed(connect())
    [ev] = t.feed(exchange(1))
    assert ev["event_type"] == "TCP_EXCHANGE"
    assert ev["pid"] == PID and ev["conn_id"] == 256 and ev["dst_ip"] == "10.9.8.7"
    assert ev["bytes"] == 1800 + 9000
    ex = ev["exchange"]
    assert ex["first_rx_us"] == 800_000 and ex["last_rx_us"] == 800_000 + 980_000
    assert ex["rx_bursts"] == 50 and ex["burst_size"] == [0, 50, 0, 0] and ex["index"] == 1
    assert "plaintext_conn_id" not in ev  # nothing of it was read


def test_plaintext_seen_on_the_connection_names_its_conn_id(tmp_path):
    t = tracker(tmp_path)
    t.feed(connect())
    payload = b"POST /v1/chat/completions HTTP/1.1\r\n\r\n"
    rec = records.DataRec(h=head(records.REC_DATA), conn_id=SSL, sk=0, call_len=len(payload),
                          offset=0, len=len(payload), fd=7, source=records.SRC_TLS,
                          direction=records.DIR_WRITE, flags=0)
    t.feed(bytes(rec) + payload)
    [ev] = t.feed(exchange(1))
    assert ev["plaintext_conn_id"] == SSL


def test_the_vector_of_a_stream():
    t_stats = {"index": 1, "tls": True, "tx_bytes": 1800, "tx_calls": 2, "rx_bytes": 9000,
               "rx_bursts": 50, "burst_min": 150, "burst_max": 260, "burst_size": [0, 50, 0, 0],
               "first_rx_us": 800_000, "last_rx_us": 1_780_000, "gap_sum_us": 49 * 20_000,
               "gap_sq_us": 49 * 20_000 ** 2, "gap_max_us": 20_000, "pauses": 0}
    v = dict(zip(FEATURES, vector(t_stats), strict=True))
    assert len(vector(t_stats)) == len(FEATURES)
    assert v["burst_mean"] == 180 and v["frac_medium"] == 1.0 and v["frac_small"] == 0.0
    assert v["ttfb_ms"] == 800 and v["duration_ms"] == 980
    assert v["gap_mean_ms"] == 20 and v["gap_std_ms"] == 0 and v["gap_cv"] == 0
    assert abs(v["bursts_per_s"] - 50 / 0.98) < 1e-9


def test_empty_statistics_give_zeros_not_errors():
    assert vector({}) == [0.0] * len(FEATURES)


def test_handshakes_and_silent_exchanges_are_not_judged():
    assert not judgeable({"tls": True, "index": 0, "rx_bursts": 3})
    assert not judgeable({"tls": True, "index": 2, "rx_bursts": 0})
    assert judgeable({"tls": True, "index": 1, "rx_bursts": 1})
    assert judgeable({"tls": False, "index": 0, "rx_bursts": 1})


def test_rows_take_the_connections_strongest_label(tmp_path):
    t = tracker(tmp_path)
    t.feed(connect())
    payload = b"x"
    rec = records.DataRec(h=head(records.REC_DATA), conn_id=SSL, sk=0, call_len=1, offset=0,
                          len=1, fd=7, source=records.SRC_TLS, direction=records.DIR_WRITE, flags=0)
    t.feed(bytes(rec) + payload)
    events = [*t.feed(exchange(0, first_rx_ns=0, rx_bursts=0, rx_calls=0)),  # nothing back
              *t.feed(exchange(1)), *t.feed(exchange(2))]
    other = dict(events[1], pid=PID + 1, plaintext_conn_id=0)  # another process, not seen
    messages = [
        {"pid": PID, "conn_id": SSL, "content_class": "HTTP_RESPONSE"},
        {"pid": PID, "conn_id": SSL, "content_class": "LLM_REQUEST", "llm_stream": True},
        {"pid": PID, "conn_id": SSL, "content_class": "LLM_RESPONSE"},
    ]
    out = list(labels.rows([*events, other, *messages]))
    assert [r["label"] for r in out] == ["llm_stream", "llm_stream", "unknown"]
    assert out[0]["features"] == vector(events[1]["exchange"])


def test_message_labels():
    assert labels.label_of({"content_class": "LLM_RESPONSE", "llm_stream": True}) == "llm_stream"
    assert labels.label_of({"content_class": "LLM_RESPONSE"}) == "llm"
    assert labels.label_of({"content_class": "MCP_REQUEST"}) == "mcp"
    assert labels.label_of({"content_class": "HTTP_REQUEST"}) == "http"
    assert labels.label_of({"content_class": "UNKNOWN"}) == "unknown"
