"""--output sinks through the real pipeline: file, syslog (UDP), and the at-least-once
webhook against a real local HTTP receiver that fails, goes away, slows down, refuses
the request; the spool surviving a monitor restart, its cap, a full disk."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from busted.bench.receivers import HttpReceiver, make_test_ca

from .conftest import busted_cli, wait_for


def _sink(summary: dict, kind: str) -> dict:
    """One sink's figures from a monitor's summary: state and gauges, plus counters."""
    from busted.report import sink_rows

    rows = [r for r in sink_rows(summary) if r.get("kind") == kind]
    assert len(rows) == 1, summary["workers"]["output"]
    return rows[0]


def _file_ids(path: Path) -> list[str]:
    return [json.loads(line)["event_id"] for line in path.read_text().splitlines()]


def test_file_syslog_and_webhook_sinks_get_every_event(monitor_factory, short_dir):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    udp.settimeout(5)
    datagrams: list[bytes] = []

    def read_udp():  # concurrently: syslog over UDP drops what a full buffer cannot hold
        try:
            while len(datagrams) < 300:
                datagrams.append(udp.recv(65535))
        except OSError:
            pass

    reader = threading.Thread(target=read_udp, daemon=True)
    reader.start()
    hook = HttpReceiver()
    path = short_dir / "events.jsonl"
    try:
        mon = monitor_factory(
            "--source", "synthetic", "--rate", "1000", "--count", "300", "--exit-when-done",
            "--output", f"file:{path}",
            "--output", f"syslog:127.0.0.1:{udp.getsockname()[1]}",
            "--output", f"webhook:{hook.url}", "--spool-dir", str(short_dir / "spool"),
            fmt="none")
        assert mon.wait_exit() == 0, mon.stderr_text()
        reader.join(10)
    finally:
        hook.close()
        udp.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(300))
    ids = [e["event_id"] for e in lines]
    assert len(set(ids)) == 300 and ids[0].endswith("-0")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(datagrams) == 300
    assert datagrams[0].startswith(b"<38>1 ") and b'"seq":0' in datagrams[0]
    assert f'event_id="{ids[0]}"'.encode() in datagrams[0]
    assert set(hook.ids) == set(ids)
    webhook = _sink(mon.summary(), "webhook")
    assert webhook["sent"] == 300 and webhook["spooled_events"] == 0
    assert webhook["state"] == "sending"
    spool = short_dir / "spool"
    assert stat.S_IMODE(os.stat(spool).st_mode) == 0o700
    for directory in spool.iterdir():
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        for f in directory.iterdir():
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600


def test_a_bad_sink_is_refused_before_anything_starts(short_dir):
    result = busted_cli("monitor", "--source", "synthetic", "--runtime-dir", str(short_dir / "r"),
                        "--output", "kafka:broker:9092")
    assert result.returncode == 2
    assert "unknown sink" in result.stderr and "Traceback" not in result.stderr


def test_webhook_failing_refusing_slow_and_a_monitor_restart_lose_nothing(monitor_factory, short_dir):
    """Events flow at 1,000/s; the receiver answers 503, then refuses connections for a
    minute while the first monitor exits and a second one starts on the same spool,
    then comes back slow. Every event written by either monitor arrives (de-duplicated
    by event_id)."""
    hook = HttpReceiver()
    truth = short_dir / "all.jsonl"
    spool = str(short_dir / "spool")
    each = 32_000  # events of the first monitor: ~32 s at 1,000/s
    # the second runs on well past the minute of outage, so it is still up to send the
    # backlog (a monitor that stops keeps what it could not send in the spool)
    second_count = 50_000
    common = ("--source", "synthetic", "--rate", "1000", "--exit-when-done", "--spool-dir", spool,
              "--output", f"webhook:{hook.url}", "--output", f"file:{truth}")
    try:
        first = monitor_factory(*common, "--count", str(each), name="a", fmt="none")
        wait_for(lambda: hook.distinct() >= 300, 30, "the first events at the receiver")
        hook.mode = "fail"  # 503 for a while
        wait_for(lambda: len(_file_ids(truth)) >= 1200, 30, "events produced while failing")
        hook.down()  # connection refused, through the restart
        down_at = time.monotonic()
        assert first.wait_exit(90) == 0, first.stderr_text()
        left = _sink(first.summary(), "webhook")
        assert left["spooled_events"] > 0 and left["state"] == "retrying"
        assert left["sent"] + left["spooled_events"] == each
        second = monitor_factory(*common, "--count", str(second_count), name="b", fmt="none")
        wait_for(lambda: time.monotonic() - down_at >= 60, 90, "a minute of outage")
        hook.delay_s = 0.3
        before = hook.distinct()
        hook.up()
        hook.mode = "slow"  # back, but slow for a while
        wait_for(lambda: hook.distinct() >= before + 2000, 60, "the spool draining slowly")
        hook.mode = "ok"
        produced = None

        def all_arrived():
            nonlocal produced
            produced = _file_ids(truth)
            return len(produced) == each + second_count and set(hook.ids) >= set(produced)

        try:
            wait_for(all_arrived, 120, "every event at the receiver")
        except AssertionError:
            missing = set(produced) - set(hook.ids)
            raise AssertionError(f"produced {len(produced)}, received {len(set(hook.ids))}, "
                                 f"missing {len(missing)} e.g. {sorted(missing)[:5]}; "
                                 f"second: {second.stderr_text()[-1500:]}") from None
        assert second.wait_exit(60) == 0, second.stderr_text()
    finally:
        hook.close()
    assert len(set(produced)) == each + second_count
    assert set(hook.ids) == set(produced)  # nothing lost, nothing invented
    done = _sink(second.summary(), "webhook")
    assert done["spooled_events"] == 0 and done["dropped"] == 0
    assert done["retried"] > 0 or left["retried"] > 0


def test_the_spool_cap_drops_the_oldest_counts_them_and_says_so(monitor_factory, short_dir):
    hook = HttpReceiver()
    hook.down()
    spool = str(short_dir / "spool")
    target = ("--output", f"webhook:{hook.url}", "--spool-dir", spool)
    try:
        first = monitor_factory("--source", "synthetic", "--rate", "0", "--count", "1000",
                                "--exit-when-done", "--spool-max", "64K", *target, name="a")
        assert first.wait_exit(60) == 0, first.stderr_text()
        ids = [e["event_id"] for e in first.events()]
        assert len(ids) == 1000
        figures = _sink(first.summary(), "webhook")
        dropped = figures["dropped"]
        assert 0 < dropped < 1000
        assert figures["spooled_events"] == 1000 - dropped
        assert "over --spool-max" in "\n".join(first.stderr)
        hook.up()
        second = monitor_factory("--source", "synthetic", "--rate", "0.01", "--spool-max", "64K",
                                 *target, name="b")
        wait_for(lambda: hook.distinct() >= 1000 - dropped, 30, "the spooled events")
        assert second.stop() == 0
    finally:
        hook.close()
    assert set(hook.ids) == set(ids[dropped:])  # exactly the newest survived


def test_a_4xx_is_a_configuration_error_reported_and_not_retried(monitor_factory, short_dir):
    hook = HttpReceiver(status=401)
    try:
        mon = monitor_factory("--source", "synthetic", "--rate", "500", "--count", "300",
                              "--exit-when-done", "--output", f"webhook:{hook.url}",
                              "--spool-dir", str(short_dir / "spool"), fmt="none")
        assert mon.wait_exit(60) == 0, mon.stderr_text()
    finally:
        hook.close()
    figures = _sink(mon.summary(), "webhook")
    assert figures["state"] == "failing"
    assert "HTTP 401" in figures["last_error"] and "--output-header" in figures["last_error"]
    assert figures["errors"] == 1 and hook.requests == 0  # one attempt, then no more
    assert figures["spooled_events"] == 300  # kept for when it is fixed
    assert "not retried" in mon.stderr_text() and "Traceback" not in mon.stderr_text()


def test_https_with_a_private_ca_gzip_and_headers_from_a_file(monitor_factory, short_dir):
    tls = make_test_ca(short_dir / "tls")
    hook = HttpReceiver(tls=(str(tls["server.pem"]), str(tls["server.key"])))
    headers = short_dir / "headers"
    headers.write_text("# for the SIEM\nAuthorization: Bearer s3cret-token\nX-Tenant: blue\n")
    headers.chmod(0o600)
    try:
        mon = monitor_factory("--source", "synthetic", "--rate", "1000", "--count", "200",
                              "--exit-when-done", "--output", f"webhook:{hook.url}",
                              "--output-ca", str(tls["ca.pem"]), "--output-gzip",
                              "--output-header", f"file:{headers}", "--output-header",
                              "env:BUSTED_TEST_HEADER", "--spool-dir", str(short_dir / "spool"),
                              env={"BUSTED_TEST_HEADER": "X-From-Env: yes"}, fmt="none")
        assert mon.wait_exit(60) == 0, mon.stderr_text()
    finally:
        hook.close()
    assert hook.distinct() == 200
    sent = hook.headers[0]
    assert sent["Authorization"] == "Bearer s3cret-token" and sent["X-Tenant"] == "blue"
    assert sent["X-From-Env"] == "yes" and sent["Content-Encoding"] == "gzip"
    assert "s3cret" not in mon.stderr_text()
    # Without the CA the receiver's certificate is not trusted: a configuration error.
    hook = HttpReceiver(tls=(str(tls["server.pem"]), str(tls["server.key"])))
    try:
        mon = monitor_factory("--source", "synthetic", "--rate", "1000", "--count", "20",
                              "--exit-when-done", "--output", f"webhook:{hook.url}",
                              "--spool-dir", str(short_dir / "spool2"), name="untrusted",
                              fmt="none")
        assert mon.wait_exit(60) == 0, mon.stderr_text()
    finally:
        hook.close()
    figures = _sink(mon.summary(), "webhook")
    assert figures["state"] == "failing" and "--output-ca" in figures["last_error"]


def test_header_files_others_can_read_and_secrets_on_the_command_line_are_refused(short_dir):
    headers = short_dir / "headers"
    headers.write_text("Authorization: Bearer s3cret\n")
    headers.chmod(0o644)
    base = ("monitor", "--source", "synthetic", "--runtime-dir", str(short_dir / "r"),
            "--spool-dir", str(short_dir / "spool"))
    result = busted_cli(*base, "--output", "webhook:http://127.0.0.1:9/x",
                        "--output-header", f"file:{headers}")
    assert result.returncode == 2 and "other users may read it" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    result = busted_cli(*base, "--output", "webhook:http://user:pw@127.0.0.1:9/x")
    assert result.returncode == 2 and "no credentials in the URL" in result.stderr
    result = busted_cli(*base, "--output", "webhook:http://127.0.0.1:9/x",
                        "--output-header", "env:BUSTED_UNSET_VARIABLE")
    assert result.returncode == 2 and "is not set" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_loses_events_counted_and_logged_and_the_pipeline_goes_on(
        monitor_factory, short_dir):
    spool = short_dir / "full"
    spool.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(spool)],
                   check=True)
    hook = HttpReceiver()
    hook.down()
    try:
        mon = monitor_factory("--source", "synthetic", "--rate", "0", "--count", "2000",
                              "--exit-when-done", "--output", f"webhook:{hook.url}",
                              "--spool-dir", str(spool), name="a")
        assert mon.wait_exit(60) == 0, mon.stderr_text()
    finally:
        hook.close()
        subprocess.run(["umount", "-l", str(spool)], check=False)
    summary = mon.summary()
    assert summary["produced"] == summary["delivered"] == 2000  # the pipeline kept going
    assert len(mon.events()) == 2000
    figures = _sink(summary, "webhook")
    assert figures["disk_errors"] > 0
    assert figures["spooled_events"] + figures["disk_errors"] == 2000
    assert "No space left on device" in "\n".join(mon.stderr)


def test_prometheus_metrics_show_the_counters(monitor_factory, short_dir):
    import urllib.request

    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    hook = HttpReceiver()
    hook.down()
    mon = monitor_factory("--source", "synthetic", "--rate", "500", "--metrics",
                          f"127.0.0.1:{port}", "--output", f"webhook:{hook.url}",
                          "--spool-dir", str(short_dir / "spool"), fmt="none")
    mon.wait_running()

    def scrape():
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return body if 'state="retrying"} 1.0' in body else None

    body = wait_for(scrape, 30, "the sink's state in the metrics")
    assert "busted_events_produced_total" in body
    assert 'busted_worker_up{worker="classify"} 1.0' in body
    assert "busted_sink_spooled_events{" in body and "busted_sink_oldest_spooled_age_seconds{" in body
    status = busted_cli("status", "--runtime-dir", str(mon.runtime_dir))
    assert "webhook:http://127.0.0.1" in status.stdout and "retrying" in status.stdout
    assert mon.stop() == 0
    hook.close()
