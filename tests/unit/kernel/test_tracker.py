"""Records -> events: chunk joining, SNI/fd/connection joins, DNS (fake /proc, no kernel)."""

from __future__ import annotations

import ctypes as ct
import socket

from busted.kernel import dns, records
from busted.kernel.tracker import Tracker

PID, TID, SSL, SK = 4242, 4243, 0x5555_0000_1000, 0xFFFF_8880_0000_0001


def head(kind: int, pid: int = PID, tid: int = TID) -> records.RecHead:
    return records.RecHead(ts_ns=1_000_000_000, type=kind, pid=pid, tid=tid, uid=1000, gid=1000,
                           cgroup_id=77, comm=b"agent")


def data(payload: bytes, offset: int, call_len: int, *, source=records.SRC_TLS,
         direction=records.DIR_WRITE, fd=-1, conn_id=SSL, flags=0, sk=0) -> bytes:
    rec = records.DataRec(h=head(records.REC_DATA), conn_id=conn_id, sk=sk, call_len=call_len,
                          offset=offset, len=len(payload), fd=fd, source=source,
                          direction=direction, flags=flags)
    return bytes(rec) + payload


def conn(kind: int, fd: int = 7, sport: int = 0) -> bytes:
    rec = records.ConnRec(h=head(kind), sk=SK, conn_id=256, fd=fd, family=socket.AF_INET,
                          sport=sport, dport=443, bytes_sent=10, bytes_received=20)
    ct.memmove(ct.addressof(rec.daddr), bytes([93, 184, 216, 34]), 4)
    ct.memmove(ct.addressof(rec.saddr), bytes([10, 0, 0, 5]), 4)
    return bytes(rec)


def tracker(tmp_path) -> Tracker:
    return Tracker(max_copy=64 * 1024, proc=str(tmp_path), clock=lambda: 100.0,
                   monotonic_ns=lambda: 0)


def test_chunks_of_one_call_become_one_event(tmp_path):
    t = tracker(tmp_path)
    body = bytes(range(256)) * 150  # 38400 bytes: three 16 KiB chunks
    chunks = [body[i:i + 16384] for i in range(0, len(body), 16384)]
    out = []
    for i, chunk in enumerate(chunks):
        out += t.feed(data(chunk, i * 16384, len(body)))
    assert len(out) == 1
    ev = out[0]
    assert ev["payload"] == body and not ev["truncated"] and ev["bytes"] == len(body)
    assert (ev["event_type"], ev["direction"], ev["pid"], ev["tid"]) == ("TLS_DATA_WRITE", "write", PID, TID)
    assert ev["process_name"] == "agent" and ev["cgroup_id"] == 77 and ev["uid"] == 1000
    assert ev["timestamp"] == 101.0


def test_a_lost_chunk_marks_the_call_truncated(tmp_path):
    t = tracker(tmp_path)
    out = t.feed(data(b"a" * 16384, 0, 40000))
    out += t.feed(data(b"c" * 7232, 32768, 40000))  # the middle chunk never came
    assert len(out) == 1 and out[0]["truncated"]
    assert t.errors["incomplete_call"] == 1


def test_calls_larger_than_the_peek_copy_are_flagged(tmp_path):
    t = tracker(tmp_path)
    t.peek_copy = 16384
    out = t.feed(data(b"x" * 16384, 0, 50000, flags=records.FLAG_TRUNCATED))
    assert len(out) == 1 and out[0]["truncated"] and out[0]["bytes"] == 50000


def test_a_wide_call_waits_for_every_chunk_up_to_max_copy(tmp_path):
    """A call on a request connection (FLAG_WIDE) is copied up to max_copy, not the peek
    size: one event once all its chunks arrived."""
    t = tracker(tmp_path)
    t.peek_copy = 16384
    wide = records.FLAG_WIDE
    assert t.feed(data(b"a" * 16384, 0, 40000, flags=wide)) == []
    assert t.feed(data(b"b" * 16384, 16384, 40000, flags=wide)) == []
    out = t.feed(data(b"c" * 7232, 32768, 40000, flags=wide))
    assert len(out) == 1 and not out[0]["truncated"] and len(out[0]["payload"]) == 40000


def test_sni_fd_and_connection_are_joined(tmp_path):
    t = tracker(tmp_path)
    sni = records.SniRec(h=head(records.REC_SNI), ssl=SSL, name=b"api.openai.com")
    setfd = records.SslRec(h=head(records.REC_SSL_FD), ssl=SSL, fd=7)
    assert t.feed(bytes(sni)) == [] and t.feed(bytes(setfd)) == []
    connect = t.feed(conn(records.REC_CONNECT))
    assert connect[0]["event_type"] == "TCP_CONNECT" and connect[0]["dst_ip"] == "93.184.216.34"
    est = t.feed(conn(records.REC_ESTABLISHED, fd=-1, sport=50000))
    assert est[0]["src_port"] == 50000 and est[0]["pid"] == PID
    ev = t.feed(data(b"POST /v1/chat/completions HTTP/1.1\r\n\r\n", 0, 38))[0]
    assert ev["sni"] == "api.openai.com"
    addrs = (ev["dst_ip"], ev["dst_port"], ev["src_ip"], ev["src_port"])
    assert addrs == ("93.184.216.34", 443, "10.0.0.5", 50000)
    close = t.feed(conn(records.REC_CLOSE, fd=-1))[0]
    assert close["event_type"] == "TCP_CLOSE" and close["bytes"] == 30
    free = records.SslRec(h=head(records.REC_SSL_FREE), ssl=SSL, fd=-1)
    t.feed(bytes(free))
    assert "sni" not in t.feed(data(b"x", 0, 1))[0]


def test_fd_less_tls_uses_the_threads_socket(tmp_path):
    t = tracker(tmp_path)
    t.feed(conn(records.REC_CONNECT))
    t.feed(conn(records.REC_ESTABLISHED, fd=-1, sport=50001))
    ev = t.feed(data(b"HTTP/1.1 200 OK\r\n\r\n", 0, 19, direction=records.DIR_READ, sk=SK))[0]
    assert ev["dst_port"] == 443 and ev["src_port"] == 50001


def test_dns_query_and_answer(tmp_path):
    t = tracker(tmp_path)
    query = dns.encode_query("api.anthropic.com")
    q = t.feed(data(query, 0, len(query), source=records.SRC_DNS, conn_id=9))[0]
    assert q["event_type"] == "DNS_QUERY" and q["dns_name"] == "api.anthropic.com"
    answer = dns.encode_answer(query, ["93.184.216.34"])
    a = t.feed(data(answer, 0, len(answer), source=records.SRC_DNS, direction=records.DIR_READ))[0]
    assert a["event_type"] == "DNS_ANSWER" and a["dns_addrs"] == ["93.184.216.34"]
    # a later connection to that address carries the name
    assert t.feed(conn(records.REC_CONNECT))[0]["dns_name"] == "api.anthropic.com"


def test_garbage_records_are_counted_not_raised(tmp_path):
    t = tracker(tmp_path)
    assert t.feed(b"\x01\x02") == []
    assert t.feed(bytes(head(99))) == []
    assert t.errors == {"bad_record": 2}


def test_dropped_sni_record_is_recovered_from_the_kernel_map(tmp_path):
    t = tracker(tmp_path)
    asked = []

    def ssl_info(pid, ssl):
        asked.append((pid, ssl))
        return 7, "api.mistral.ai"

    t.ssl_info = ssl_info
    t.feed(conn(records.REC_CONNECT))
    first = t.feed(data(b"POST / HTTP/1.1\r\n\r\n", 0, 19))[0]
    second = t.feed(data(b"more", 0, 4))[0]
    assert first["sni"] == second["sni"] == "api.mistral.ai"
    assert first["dst_ip"] == "93.184.216.34"  # fd 7 from the map -> the connection
    assert asked == [(PID, SSL)]  # asked once per SSL object


def test_process_name_is_the_process_not_the_writing_thread(tmp_path):
    """Agents write from worker threads: the event names the process (its main thread's
    comm) and the thread separately."""
    (tmp_path / str(PID)).mkdir()
    (tmp_path / str(PID) / "comm").write_text("codex\n")
    ev = tracker(tmp_path).feed(data(b"GET / HTTP/1.1\r\n\r\n", 0, 18))[0]
    assert ev["process_name"] == "codex" and ev["thread_name"] == "agent"


def test_a_process_already_gone_is_named_by_the_program_it_ran(tmp_path):
    t = tracker(tmp_path)  # no /proc entry: the process has exited
    exec_rec = records.RecHead(ts_ns=1, type=records.REC_EXEC, pid=PID, tid=PID, uid=0,
                               gid=0, cgroup_id=77, comm=b"claude")
    assert t.feed(bytes(exec_rec)) == []
    ev = t.feed(data(b"GET / HTTP/1.1\r\n\r\n", 0, 18))[0]
    assert ev["process_name"] == "claude" and ev["thread_name"] == "agent"


def test_a_single_threaded_process_has_no_thread_name(tmp_path):
    (tmp_path / str(PID)).mkdir()
    (tmp_path / str(PID) / "comm").write_text("agent\n")
    ev = tracker(tmp_path).feed(data(b"GET / HTTP/1.1\r\n\r\n", 0, 18))[0]
    assert ev["process_name"] == "agent" and "thread_name" not in ev
