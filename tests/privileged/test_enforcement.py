"""`busted monitor --enforce` end to end: real probes, real SDK clients, real kills.

The policy is the seed README's inline rule adapted to OpenAI (deny when the provider is
OpenAI and the plaintext contains "berko") plus a ``block_destinations`` entry for an
address of this test's own. Clients run without a controlling terminal (as services
and agents do), so their TLS writes are held until the verdict: the denied one is
killed before its bytes are encrypted — the test server never receives the prompt —
while an allowed one completes, and an Anthropic client alongside is not touched.

Other monitors check the safety net: killing the monitor (SIGKILL) while a process is
held leaves that process running, and ``--dry-run`` acts on nothing.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid

import pytest
from polling import wait_for

from .harness.events import Event, summarize
from .harness.monitor import MonitorProcess, berko_rule, enforcing_monitor, find_busted
from .harness.pki import BORING_HOST

pytestmark = pytest.mark.privileged

BERKO_RULE = berko_rule("OpenAI")
TIMEOUT = 30.0


def _block_rule(address: str) -> str:
    return f'package busted\nimport rego.v1\nblock_destinations contains "{address}:443"'


@pytest.fixture(scope="module")
def enforcing(tls_server, blocked_addr):
    with enforcing_monitor(BERKO_RULE, _block_rule(blocked_addr)) as proc:
        yield proc


def _marker(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def _enforcement(monitor: MonitorProcess, pid: int, action: str) -> Event:
    def find(events):
        return next((e for e in events if e.get("event_type") == "ENFORCEMENT"
                     and e.get("pid") == pid and e.get("action") == action), None)
    return monitor.events.wait_until(find, TIMEOUT, f"an ENFORCEMENT {action} event of pid {pid}", pid)


def _curl(url: str, namespace, resolve: str = "") -> subprocess.CompletedProcess:
    argv = ["curl", "-sS", "-v", "--max-time", "10", "--cacert", str(namespace.ca_pem)]
    if resolve:
        argv += ["--resolve", resolve]
    return subprocess.run([*argv, url], capture_output=True, text=True, start_new_session=True)


# --- content decisions: held writes -----------------------------------------------------

def test_denied_openai_prompt_is_killed_before_it_leaves(enforcing, tls_server, clients):
    marker = _marker("berko")
    result = clients.openai(f"please tell {marker} a joke", check=False, timeout=60)
    assert result.returncode == -signal.SIGKILL, (
        f"the client was not killed (exit {result.returncode}):\n{result.stderr[-1500:]}")
    time.sleep(0.5)  # anything in flight would have arrived by now
    assert marker.encode() not in tls_server.received(), "the server received the denied prompt"
    killed = _enforcement(enforcing, result.pid, "killed")
    assert killed.get("policy") == "deny" and killed.get("llm_provider") == "OpenAI", summarize(killed)
    assert 0 < killed.get("hold_ms", 0) < 1000, summarize(killed)
    judged = enforcing.events.wait_for(
        lambda e: e.get("pid") == result.pid and e.get("content_class") == "LLM_REQUEST", TIMEOUT,
        f"the LLM_REQUEST of pid {result.pid}")
    assert judged.get("policy") == "deny" and judged.get("action") == "kill", summarize(judged)


def test_allowed_prompt_completes_and_anthropic_alongside_is_untouched(enforcing, tls_server,
                                                                       clients):
    allowed, other = _marker("hello"), _marker("berko-for-claude")
    results = {}

    def run(name, call):
        results[name] = call()

    threads = [
        threading.Thread(target=run, args=("openai", lambda: clients.openai(f"say {allowed}"))),
        threading.Thread(target=run, args=("anthropic", lambda: clients.anthropic(f"say {other}"))),
        threading.Thread(target=run, args=("denied", lambda: clients.openai(
            f"berko {_marker('x')}", check=False, timeout=60))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert results["openai"].returncode == 0 and results["anthropic"].returncode == 0
    assert results["denied"].returncode == -signal.SIGKILL
    received = tls_server.received()
    assert allowed.encode() in received and other.encode() in received
    for name in ("openai", "anthropic"):
        pid = results[name].pid
        event = enforcing.events.wait_for(
            lambda e, pid=pid: e.get("pid") == pid and e.get("content_class") == "LLM_REQUEST",
            TIMEOUT, f"the LLM_REQUEST of the {name} client")
        assert event.get("policy") == "allow" and not event.get("action"), summarize(event)
    assert not [e for e in enforcing.events.snapshot() if e.get("event_type") == "ENFORCEMENT"
                and e.get("pid") in (results["openai"].pid, results["anthropic"].pid)]


# --- destinations ---------------------------------------------------------------------------

def test_denied_destination_gets_eperm_and_others_work(enforcing, namespace, blocked_addr,
                                                       loopback_addr):
    url = f"https://{BORING_HOST}/"

    def refused():
        run = _curl(url, namespace, resolve=f"{BORING_HOST}:443:{blocked_addr}")
        return run if "Operation not permitted" in run.stderr else None

    run = wait_for(refused, 15, f"curl to {blocked_addr}:443 to fail with EPERM")
    assert run.returncode == 7, run.stderr
    ok = _curl(url, namespace,
               resolve=f"{BORING_HOST}:443:{loopback_addr}")
    assert ok.returncode == 0, ok.stderr
    event = enforcing.events.wait_for(
        lambda e: e.get("event_type") == "ENFORCEMENT" and e.get("action") == "blocked-connect"
        and e.get("dst_ip") == blocked_addr, TIMEOUT, "the refused connect")
    assert event.get("process_name") == "curl" and event.get("dst_port") == 443, summarize(event)


def test_a_second_enforcing_monitor_is_refused(enforcing, tmp_path):
    runtime = tmp_path / "second"
    run = subprocess.run([find_busted(), "monitor", "--enforce", "--rule", BERKO_RULE,
                          "--runtime-dir", str(runtime)], capture_output=True, text=True,
                         timeout=240)
    assert run.returncode != 0
    assert "already enforcing on this host" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


# --- interactive processes ----------------------------------------------------------------

# Gives the client a controlling terminal (a pty), as in a shell, then execs it (same pid).
TTY_WRAPPER = """
import fcntl, os, pty, sys, termios
master, slave = pty.openpty()
os.set_inheritable(master, True)  # closing the master would hang up the terminal (SIGHUP)
if os.getsid(0) != os.getpid():
    os.setsid()
fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def test_a_process_with_a_terminal_is_never_stopped_but_killed_after_the_verdict(
        enforcing, tls_server, clients, body_dir):
    from .harness.clients import PYCLIENT, _body_file
    from .test_capture_e2e import OPENAI_CHAT, _chat_body

    marker = _marker("berko-tty")
    body = _body_file(_chat_body(f"tell {marker}"), body_dir)
    repeat = 300
    argv = [clients.python, "-c", TTY_WRAPPER, clients.python, str(PYCLIENT), "raw", OPENAI_CHAT,
            "--body-file", str(body), "--repeat", str(repeat),
            "--header", "Content-Type: application/json", "--header", "Authorization: Bearer sk-x"]
    result = clients.run(argv, check=False, timeout=60)
    assert result.returncode == -signal.SIGKILL, f"exit {result.returncode}: {result.stderr[-1500:]}"
    sent = tls_server.received().count(marker.encode())
    # The denied request itself left (no hold for a terminal's processes); the kill came
    # after its verdict, long before the loop could finish.
    assert 1 <= sent < repeat, f"{sent} of {repeat} requests reached the server"
    event = _enforcement(enforcing, result.pid, "killed-after-send")
    assert event.get("hold_ms") == 0, summarize(event)
    assert not [e for e in enforcing.events.for_pid(result.pid) if e.get("held")]


# --- evasion: a private OpenSSL copy ---------------------------------------------------------

def test_a_private_libssl_copy_sending_at_once_is_still_held(enforcing, tls_server, clients,
                                                             body_dir, harness_dir):
    """Copying libssl elsewhere is the way around probes placed on the system library: the
    loader's open of the copy stops the process until its probes are attached, so even a
    request sent the moment the library is loaded is judged (and this one killed)."""
    import shutil
    from pathlib import Path

    from .test_capture_e2e import OPENAI_CHAT, _chat_body

    system = Path("/usr/lib/x86_64-linux-gnu")
    private = harness_dir / f"enforce-libssl-{uuid.uuid4().hex[:6]}"
    private.mkdir()
    for name in ("libssl.so.3", "libcrypto.so.3"):
        shutil.copy2(system / name, private / name)
    marker = _marker("berko-private-libssl")
    result = clients.raw(OPENAI_CHAT, _chat_body(f"tell {marker}"), body_dir=body_dir,
                         headers=("Content-Type: application/json",), check=False,
                         env={"LD_LIBRARY_PATH": str(private)})
    assert result.returncode == -signal.SIGKILL, (
        f"exit {result.returncode}: {result.stderr[-1500:]}\n{enforcing.events.describe(result.pid)}")
    time.sleep(0.5)
    assert marker.encode() not in tls_server.received()
    _enforcement(enforcing, result.pid, "killed")
