"""Fixtures of the privileged tier: real servers on loopback, real clients, the real monitor.

Everything listens on one loopback address of its own, ``127.66.X.Y`` derived from the
pytest pid, so these tests do not collide with anything else on 127.0.0.1 (another
engineer's test server, a second run): TLS on :443 (the real port, so the SDKs' default
URLs work unchanged), fake Ollama on :11434, DNS on :53. Clients resolve the provider
names to that address in a private mount namespace (see harness/namespace.py).

These tests need root (BPF, ports below 1024, mount namespaces). Without root they are
skipped; as root nothing is skipped: a missing prerequisite fails with what to install.
"""

from __future__ import annotations

import os
import shutil

import pytest

from busted.workers.classify_worker import ClassifyStage

from .harness import fake_apis
from .harness.clients import Clients
from .harness.dns_responder import DnsResponder
from .harness.http_server import HttpServer
from .harness.monitor import MonitorProcess, find_busted
from .harness.namespace import ClientNamespace
from .harness.pki import HOSTS, make_pki

OLLAMA_PORT = 11434


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="privileged tests need root (BPF, port 443, mount namespaces)")
    for item in items:
        if "tests/privileged" in str(item.fspath):
            item.add_marker(skip)


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: apt-get install -y {package} (deploy/setup-host.sh)")


@pytest.fixture(scope="session")
def loopback_addr() -> str:
    pid = os.getpid()
    return f"127.66.{(pid >> 8) & 0xFF}.{1 + pid % 254}"


@pytest.fixture(scope="session")
def blocked_addr(loopback_addr) -> str:
    """Another loopback address of this run, on which nothing listens (what enforcement
    tests deny)."""
    a, b, c, d = loopback_addr.split(".")
    return f"{a}.{b}.{c}.{int(d) % 254 + 1}"


@pytest.fixture(scope="session")
def harness_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("harness")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def pki(harness_dir):
    _require("openssl", "openssl")
    return make_pki(harness_dir / "pki")


@pytest.fixture(scope="session")
def tls_server(pki, loopback_addr):
    contexts = {host: pki.server_context(host) for host in HOSTS}
    server = HttpServer(loopback_addr, 443, fake_apis.route, contexts, default_host=HOSTS[0])
    with server:
        yield server


@pytest.fixture(scope="session")
def ollama_server(loopback_addr):
    with HttpServer(loopback_addr, OLLAMA_PORT, fake_apis.route) as server:
        yield server


@pytest.fixture(scope="session")
def dns_server(loopback_addr):
    responder = DnsResponder(loopback_addr, {host: loopback_addr for host in HOSTS}).start()
    yield responder
    responder.stop()


@pytest.fixture(scope="session")
def namespace(harness_dir, loopback_addr, pki):
    _require("unshare", "util-linux")
    return ClientNamespace(harness_dir, loopback_addr, HOSTS, pki.ca_pem)


@pytest.fixture(scope="session")
def clients(namespace):
    return Clients(namespace)


@pytest.fixture(scope="session")
def body_dir(harness_dir):
    path = harness_dir / "bodies"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def monitor(tls_server, ollama_server, dns_server):
    """One real monitor for the whole session (bcc compiles the probes once, ~10-60 s),
    with the default flags users run: a request larger than the 16 KiB ring-record chunk
    travels in several kernel records and must come out whole."""
    # events.sock is only read for raw payloads while classify is a placeholder: decoding
    # the whole host's stream costs CPU the monitor could use.
    proc = MonitorProcess(find_busted(), subscribe=bool(ClassifyStage.passthrough)).start()
    yield proc
    alive = proc.alive()
    status = proc.stop()
    assert alive, f"the monitor died during the tests (status {status}):\n{proc.stderr_tail()}"
    assert status == 0, f"monitor exited with status {status} on SIGTERM:\n{proc.stderr_tail()}"
