"""TLS write/read probes as uprobe sessions (busted/kernel/uprobes.py), as root.

Real probes (KernelSource in this process), a real OpenSSL client (Python's ssl in a
child process) and a TLS sink server in this process (ignored by the probes as busted's
own). The kernel's own run counters (``bpf_stats_enabled``) show how many times the
write program ran per client write: a call on a connection judged uninteresting runs it
once (its entry; the return is skipped), a call on a copied connection twice.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from busted import messages
from busted.bench.kernel_cost import enable_bpf_stats, restore_bpf_stats
from busted.bench.tls_workload import make_certificates
from busted.config import MonitorConfig

pytestmark = pytest.mark.privileged

SNI = "api.openai.com"
WRITES = 3000
TIMEOUT = 30.0
LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"

CLIENT = textwrap.dedent("""
    import socket, ssl, sys
    port, cafile, first = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
    ctx = ssl.create_default_context(cafile=cafile)
    conn = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                           server_hostname="api.openai.com")
    conn.sendall(first + b"\\r\\nHost: api.openai.com\\r\\ncontent-length: 1000000000\\r\\n\\r\\n")
    print("sent", flush=True)
    sys.stdin.readline()  # the test has judged the connection (or not)
    piece = b"b" * 100
    for _ in range(int(sys.argv[4])):
        conn.sendall(piece)  # one SSL_write_ex each
    print("done", flush=True)
    sys.stdin.readline()
""")


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(CA, certificate for SNI, key)."""
    return make_certificates(tmp_path_factory.mktemp("tls"), SNI)


@pytest.fixture(scope="module")
def sink(cert):
    """A TLS server that reads and drops everything (in this process: not traced)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[1]), str(cert[2]))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(raw: socket.socket) -> None:
        try:
            with ctx.wrap_socket(raw, server_side=True) as conn:
                while conn.recv(65536):
                    pass
        except (OSError, ssl.SSLError):
            pass

    def accept() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture(scope="module")
def stats_on():
    before = enable_bpf_stats()
    yield
    restore_bpf_stats(before)


def _source(sessions: bool):
    from busted.sources.kernel import KernelSource

    os.environ["BUSTED_UPROBE_SESSIONS"] = "on" if sessions else "off"
    try:
        src = KernelSource(MonitorConfig(source="bpf", ring_pages=4096))
        src.start()
    finally:
        os.environ.pop("BUSTED_UPROBE_SESSIONS", None)
    return src


@pytest.fixture(scope="module")
def with_sessions(stats_on):
    src = _source(True)
    yield src
    src.close()


def _run_client(src, port: int, cafile: Path, first: str, judge: bool) -> dict:
    """One client connection: its first write, then WRITES writes of 100 bytes; returns
    the write programs' runs during those writes and the bytes captured from them."""
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(cafile), first,
                             str(WRITES)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    events: list[dict] = []
    try:
        assert proc.stdout.readline().strip() == "sent"
        deadline = time.monotonic() + TIMEOUT
        head = None
        while head is None and time.monotonic() < deadline:
            events += [e for e in src.poll(0.1) if e.get("pid") == proc.pid]
            head = next((e for e in events if bytes(e.get("payload") or b"").startswith(
                first.encode())), None)
        assert head is not None, f"the first write was not captured: {src.stats()}"
        if judge:  # what the classify worker answers for an uninteresting connection
            src.feedback(messages.verdict(proc.pid, head["conn_id"], capture=False))
        events.clear()
        before = src.program_stats()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        after = src.program_stats()
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            events += [e for e in src.poll(0.1) if e.get("pid") == proc.pid]
        proc.stdin.write("end\n")
        proc.stdin.flush()
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    runs = {name: after[name][0] - before.get(name, (0, 0))[0] for name in after
            if name.startswith("tls_write")}
    captured = sum(len(e.get("payload") or b"") for e in events
                   if bytes(e.get("payload") or b"").startswith(b"b"))
    return {"runs": {k: v for k, v in runs.items() if v}, "captured": captured}


def test_sessions_are_used_on_this_kernel(with_sessions):
    stats = with_sessions.stats()
    assert stats["uprobe_sessions"] > 0, with_sessions.uprobes.why_no_sessions
    assert not [e for e in with_sessions.attach_errors if "libssl.so" in e], \
        with_sessions.attach_errors


def test_an_uninteresting_connection_pays_one_probe_per_call(with_sessions, sink, cert):
    result = _run_client(with_sessions, sink, cert[0], "PUT /upload HTTP/1.1", judge=True)
    runs = result["runs"].get("tls_write_ex_session", 0)
    # the client's writes (and nothing of the server, which is busted's own process)
    assert WRITES <= runs < WRITES * 1.5, result
    assert "tls_write_return" not in result["runs"], result
    assert result["captured"] == 0, result


def test_a_copied_connection_keeps_its_return_probe(with_sessions, sink, cert):
    result = _run_client(with_sessions, sink, cert[0], "POST /v1/chat/completions HTTP/1.1",
                         judge=False)
    runs = result["runs"].get("tls_write_ex_session", 0)
    assert 2 * WRITES <= runs < 2.5 * WRITES, result
    assert result["captured"] == WRITES * 100, result


def test_classic_probes_and_sessions_share_a_site(with_sessions, tmp_path):
    """Several tracers on one function: busted's classic probes (with a zero USDT counter
    offset, unlike bcc 0.26's own attach) and a session coexist; the kernel refused the
    second tracer before ("ref_ctr_offset mismatch")."""
    from busted.kernel import tls
    from busted.kernel.uprobes import Uprobes

    copy = tmp_path / "libssl.so.3"
    shutil.copy(LIBSSL, copy)
    _, sites = tls.plan(str(copy))
    probes = [Uprobes(with_sessions._bpf, sessions=False),
              Uprobes(with_sessions._bpf, sessions=False),
              Uprobes(with_sessions._bpf, sessions=True)]
    try:
        for uprobes in probes:
            attached, errors = uprobes.attach(str(copy), sites, (-1,))
            assert errors == [] and attached > 0
        assert probes[2].session_count == 2  # SSL_write and SSL_read
    finally:
        for uprobes in probes:
            uprobes.close()


def test_without_sessions_the_classic_pair_captures_the_same(stats_on, sink, cert):
    src = _source(False)
    try:
        assert src.stats()["uprobe_sessions"] == 0
        assert "BUSTED_UPROBE_SESSIONS" in src.uprobes.why_no_sessions
        result = _run_client(src, sink, cert[0], "POST /v1/chat/completions HTTP/1.1",
                             judge=False)
        assert result["captured"] == WRITES * 100, result
        assert WRITES <= result["runs"].get("tls_write_return", 0) < WRITES * 1.5, result
        judged = _run_client(src, sink, cert[0], "PUT /upload HTTP/1.1", judge=True)
        assert judged["captured"] == 0, judged
    finally:
        src.close()
