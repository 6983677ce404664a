"""Blind-spot rules without a kernel: which connections are watched, when one is blind,
throttling per process and destination, and how the report reaches status, Prometheus
and the text output.

The clock, the socket byte counts and /proc are fakes; the ClientHellos are real
(tests/fixtures/tls_hello).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from busted.kernel import blindspots
from busted.kernel.blindspots import BlindSpots, TlsConnection
from busted.kernel.tls import hello

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tls_hello"
GNUTLS_HELLO = hello.parse((FIXTURES / "gnutls_cli.bin").read_bytes())
HELLO_LEN = 411


class FakeTracker:
    def __init__(self) -> None:
        self.new: list[TlsConnection] = []
        self.plaintext_seen: dict[tuple[int, str], int] = {}

    def take_tls_connections(self) -> list[TlsConnection]:
        out, self.new = self.new, []
        return out


class World:
    """A fake /proc with processes, a clock, and the kernel's per-socket byte counts."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = tmp_path / "proc"
        self.proc.mkdir()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.now = 1000.0
        self.sent: dict[int, int] = {}
        self.tracker = FakeTracker()
        self.unlocated: dict[str, str] = {}
        self.stacks: dict[str, str] = {}
        self.spots = BlindSpots(self.tracker, self.unlocated, self.stacks, str(self.proc),
                                sent_bytes=self.sent.get, clock=lambda: self.now,
                                wall=lambda: 1_700_000_000.0 + self.now)
        self._next_sk = 1

    def process(self, pid: int, program: str, libs: tuple[str, ...] = ()) -> str:
        exe = self.bin / program
        exe.write_bytes(b"not an elf")
        d = self.proc / str(pid)
        d.mkdir()
        os.symlink(exe, d / "exe")
        (d / "maps").write_text("".join(
            f"7f00-7f01 r-xp 00000000 08:01 1 {lib}\n" for lib in (str(exe), *libs)))
        return str(exe)

    def connect(self, pid: int, sni: str = "api.openai.com", name: str = "gnutls-cli",
                dns_name: str = "") -> TlsConnection:
        sk = self._next_sk
        self._next_sk += 1
        h = hello.parse((FIXTURES / "gnutls_cli.bin").read_bytes())
        h.sni = sni
        c = TlsConnection(pid=pid, process_name=name, uid=0, fd=5, conn_id=sk * 256, sk=sk,
                          hello=h, hello_len=HELLO_LEN, seen_ns=int(self.now * 1e9),
                          timestamp=self.now, dst_ip="127.66.1.2", dst_port=443,
                          dns_name=dns_name)
        self.sent[sk] = HELLO_LEN
        self.tracker.new.append(c)
        return c

    def run(self, seconds: float, step: float = 0.25) -> list[dict]:
        out = []
        end = self.now + seconds
        while self.now < end:
            out += self.spots.tick()
            self.now += step
        return out


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


GNUTLS = "/usr/lib/x86_64-linux-gnu/libgnutls.so.30"


def test_a_request_without_plaintext_is_reported_once_confirmed(world):
    exe = world.process(100, "gnutls-cli", (GNUTLS,))
    c = world.connect(100)
    assert world.run(5) == []  # only the handshake went out
    world.sent[c.sk] += 2000  # a request
    first = world.run(blindspots.CONFIRM_S - 0.5)
    assert first == [], "reported before the confirmation delay"
    [event] = world.run(1.5)
    assert event["event_type"] == "BLIND_SPOT"
    assert (event["pid"], event["sni"], event["exe"], event["tls_library"]) == (
        100, "api.openai.com", exe, "GnuTLS")
    assert event["provider"] == "OpenAI" and event["bytes"] == 2000
    assert "GnuTLS" in event["blind_reason"] and "curl" in event["blind_advice"]
    assert event["tls_alpn"] == "http/1.1" and event["dst_ip"] == "127.66.1.2"
    assert world.run(10) == [] and not world.spots.candidates


def test_one_event_per_process_and_destination_per_minute(world):
    world.process(100, "gnutls-cli", (GNUTLS,))
    world.process(200, "gnutls-cli", (GNUTLS,))

    def blind_request(pid, sni="api.openai.com"):
        c = world.connect(pid, sni)
        world.sent[c.sk] += 5000
        return world.run(3)

    assert len(blind_request(100)) == 1
    assert blind_request(100) == []  # same process, same host, within the minute
    assert len(blind_request(100, "api.anthropic.com")) == 1  # another destination
    assert len(blind_request(200)) == 1  # another process
    world.run(blindspots.REPEAT_S)
    assert len(blind_request(100)) == 1  # a minute later: again
    table = {(e["pid"], e["destination"]): e for e in world.spots.report()}
    assert table[(100, "api.openai.com")]["connections"] == 3
    assert table[(100, "api.openai.com")]["llm_host"] is True


@pytest.mark.parametrize("how", ["on the connection", "same host", "unattributed"])
def test_plaintext_seen_means_not_blind(world, how):
    world.process(100, "curl", ("/usr/lib/x86_64-linux-gnu/libssl.so.3",))
    c = world.connect(100, name="curl")
    world.sent[c.sk] += 5000
    seen_at = int((world.now + 0.1) * 1e9)
    if how == "on the connection":
        c.plaintext = True
    else:
        world.tracker.plaintext_seen[(100, "api.openai.com" if how == "same host" else "")] = seen_at
    assert world.run(10) == [] and not world.spots.candidates


def test_plaintext_from_before_the_hello_does_not_count(world):
    world.process(100, "gnutls-cli", (GNUTLS,))
    world.tracker.plaintext_seen[(100, "api.openai.com")] = int((world.now - 5) * 1e9)
    c = world.connect(100)
    world.sent[c.sk] += 5000
    assert len(world.run(5)) == 1


def test_closed_connections_are_judged_on_their_close_totals(world):
    world.process(100, "gnutls-cli", (GNUTLS,))
    small, big = world.connect(100), world.connect(100, "api.anthropic.com")
    small.sent_at_close = HELLO_LEN + 300
    big.sent_at_close = HELLO_LEN + 3000
    del world.sent[small.sk], world.sent[big.sk]  # the kernel forgot both sockets
    [event] = world.run(5)
    assert event["sni"] == "api.anthropic.com" and event["bytes"] == 3000
    assert not world.spots.candidates


def test_only_llm_hosts_agents_and_unlocated_programs_are_watched(world):
    world.process(100, "gnutls-cli", (GNUTLS,))
    world.process(101, "claude")
    exe = world.process(102, "mybot")
    world.unlocated[exe] = "no signature matched SSL_write"
    world.process(103, "gnutls-cli", (GNUTLS,))
    for pid, sni, dns in ((100, "example.com", ""), (101, "statsig.example", ""),
                          (102, "example.org", ""), (103, "", "api.mistral.ai")):
        c = world.connect(pid, sni, name=Path(os.readlink(world.proc / str(pid) / "exe")).name,
                          dns_name=dns)
        world.sent[c.sk] += 5000
    events = {e["pid"]: e for e in world.run(5)}
    assert set(events) == {101, 102, 103}  # not gnutls-cli to example.com
    assert "not located: no signature matched SSL_write" in events[102]["blind_reason"]
    assert events[103]["dns_name"] == "api.mistral.ai" and events[103]["provider"] == "Mistral"
    assert "sni" not in events[103]


def test_a_probed_program_that_still_sends_unseen_says_so(world):
    lib = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
    world.process(100, "python3", (lib,))
    world.stacks[lib] = "OpenSSL"
    c = world.connect(100, name="python3")
    world.sent[c.sk] += 5000
    [event] = world.run(5)
    assert event["blind_reason"].startswith(f"OpenSSL at {lib} is probed")


def test_stats_feed_status_and_prometheus(world, tmp_path):
    world.process(100, "gnutls-cli", (GNUTLS,))
    c = world.connect(100)
    world.sent[c.sk] += 5000
    world.run(5)
    world.unlocated["/opt/agent/bin/x"] = "two candidates for SSL_read"
    stats = world.spots.stats()
    assert stats["blind_spots"] == 1
    assert stats["blind_processes"] == 1.0 and isinstance(stats["blind_processes"], float)
    rows = {r["exe"]: r for r in stats["blind"]}
    assert rows[str(tmp_path / "bin" / "gnutls-cli")]["alive"] is True
    assert "two candidates" in rows["/opt/agent/bin/x"]["blind_reason"]
    # the process ends: status keeps it a while, the gauge counts only live ones
    shutil.rmtree(world.proc / "100")
    assert world.spots.stats()["blind_processes"] == 0.0
    world.now += blindspots.KEEP_S + 1
    assert [r for r in world.spots.report() if r["pid"]] == []


def test_prometheus_exposes_the_blind_counters():
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from busted.metrics import _Collector

    registry = CollectorRegistry()
    registry.register(_Collector(lambda: {"workers": {"capture": {
        "blind_spots": 3, "blind_processes": 2.0}}}))
    text = generate_latest(registry).decode()
    assert "busted_blind_spots_total 3.0" in text
    assert "busted_blind_processes 2.0" in text


def test_text_output_and_status_table_show_the_blind_program():
    from rich.console import Console

    from busted.report import blind_table
    from busted.workers.output_worker import to_text

    event = {"event_type": "BLIND_SPOT", "timestamp": 0.0, "pid": 5,
             "process_name": "gnutls-cli", "exe": "/usr/bin/gnutls-cli",
             "sni": "api.openai.com", "tls_library": "GnuTLS",
             "blind_reason": "busted has no probes for GnuTLS", "blind_advice": "use curl"}
    lines = to_text(event).splitlines()
    assert "gnutls-cli (5) BLIND api.openai.com [GnuTLS] /usr/bin/gnutls-cli" in lines[0]
    assert lines[1:] == ["  why: busted has no probes for GnuTLS", "  do: use curl"]
    console = Console(width=200, record=True)
    console.print(blind_table([dict(event, destination="api.openai.com", alive=True)]))
    text = console.export_text()
    assert "gnutls-cli" in text and "GnuTLS" in text and "use curl" in text


def test_explanations_name_the_library_and_a_way_out():
    for library in ("GnuTLS", "NSS", "Java"):
        reason, advice = blindspots.explain(library, "/usr/bin/x", "", "")
        assert library.split()[0] in reason and advice
    reason, _ = blindspots.explain("", "/usr/bin/x", "", "")
    assert "no TLS library" in reason
    assert blindspots.is_agent("/var/cache/busted/agents/codex-1/package/vendor/x/bin/codex", "")
    assert blindspots.is_agent("/usr/bin/node", "claude")
    assert not blindspots.is_agent("/usr/bin/curl", "curl")
