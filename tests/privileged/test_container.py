"""The container image, built and run for real with podman (deploy/build-image.sh, the
script the README gives): ``busted doctor`` inside it, the synthetic source without any
privilege, and, with exactly the capabilities the README lists and the host's PID
namespace, the capture of a TLS client on the host (``container_id`` empty) and of one
inside a second container (``container_id`` its id), with the runtime directory on a
host volume and its group the host's ``busted``; compose runs it ``--privileged``.

The image build (~2 minutes on a fresh machine, seconds when podman's cache has it)
happens once per session. Figures for bench/README.md "Deployment": run with
``-s`` and read the ``[container]`` lines.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from polling import wait_for

from .harness.tls_echo import CLIENT, tls_echo_server

REPO = Path(__file__).resolve().parents[2]
IMAGE = "busted:test"
# What the README says a capturing container needs (besides --privileged --pid=host).
MOUNTS = ("-v", "/sys/kernel/tracing:/sys/kernel/tracing",
          "-v", "/sys/kernel/debug:/sys/kernel/debug",
          "-v", "/sys/fs/bpf:/sys/fs/bpf",
          "-v", "/lib/modules:/lib/modules:ro",
          "-v", "/usr/src:/usr/src:ro")


# Instead of --privileged: exactly the capabilities the README lists (podman's default
# seccomp profile allows bpf() and perf_event_open() to a container holding them).
EXACT = ["--cap-drop=ALL", *(f"--cap-add=CAP_{c}" for c in (
    "BPF", "PERFMON", "SYS_ADMIN", "DAC_OVERRIDE", "SYS_PTRACE", "KILL", "SETUID", "SETGID",
    "CHOWN"))]


def podman_args() -> list[str]:
    out = subprocess.run(["bash", str(REPO / "deploy/container/podman-args.sh")],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


@pytest.fixture(scope="session")
def image() -> str:
    for tool, package in (("podman", "podman"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install -y {package} (deploy/setup-host.sh)")
    started = time.monotonic()
    result = subprocess.run(["bash", str(REPO / "deploy/build-image.sh"), IMAGE],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    size = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE],
                          capture_output=True, text=True, check=True).stdout.strip()
    print(f"[container] build {time.monotonic() - started:.0f} s, image {int(size) / 1e6:.0f} MB")
    return IMAGE


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "run", "--rm", *podman_args(), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_doctor_in_the_container(image):
    result = run("--privileged", "--pid=host", *MOUNTS, image, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ok  ] capabilities" in result.stdout
    assert "[ok  ] headers" in result.stdout

    # Without the host's kernel headers doctor says what to mount, and fails.
    bare = run("--privileged", "--pid=host", "-v", "/sys/kernel/tracing:/sys/kernel/tracing",
               image, "doctor")
    assert bare.returncode == 1
    assert "[MISS] headers" in bare.stdout
    assert "mount the host's /lib/modules and /usr/src read-only" in bare.stdout

    # Without privileges it names the capabilities that are missing.
    unprivileged = run(image, "doctor")
    assert unprivileged.returncode == 1
    assert "[MISS] capabilities" in unprivileged.stdout and "CAP_BPF" in unprivileged.stdout


def test_synthetic_source_without_privileges(image):
    name = f"busted-synth-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        ["podman", "run", "--rm", "--name", name, *podman_args(), image, "monitor",
         "--source", "synthetic", "--rate", "200", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        events = []
        for line in proc.stdout:
            if line.startswith("{"):
                events.append(json.loads(line))
            if len(events) >= 20:
                break
        assert len(events) >= 20, proc.stderr.read() if proc.poll() is not None else ""
        assert all(e.get("event_type") for e in events)
    finally:
        subprocess.run(["podman", "stop", "-t", "15", name], capture_output=True, timeout=60)
        proc.wait(60)


@pytest.fixture
def tls_server(tmp_path):
    with tls_echo_server(tmp_path) as port:
        yield port


def test_capture_on_the_host_and_in_another_container(image, tls_server):
    gid = grp.getgrnam("busted").gr_gid
    shared = Path(tempfile.mkdtemp(prefix="busted-ctr-", dir="/tmp"))
    os.chown(shared, 0, gid)  # as the README says: root:busted 0750
    shared.chmod(0o750)
    name = f"busted-mon-{uuid.uuid4().hex[:8]}"
    monitor = subprocess.Popen(
        ["podman", "run", "--rm", "--name", name, *podman_args(), *EXACT, "--pid=host",
         "--network", "host", *MOUNTS, "-v", f"{shared}:/run/busted", "-e", f"BUSTED_GID={gid}",
         image, "monitor", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[dict] = []
    stderr: list[str] = []
    threading.Thread(target=lambda: [events.append(json.loads(x)) for x in monitor.stdout
                                     if x.startswith("{")], daemon=True).start()
    threading.Thread(target=lambda: [stderr.append(x) for x in monitor.stderr], daemon=True).start()
    started = time.monotonic()
    clients: list[subprocess.Popen] = []
    client_name = f"busted-client-{uuid.uuid4().hex[:8]}"
    try:
        def ready():
            assert monitor.poll() is None, "".join(stderr[-40:])
            return any("capture ready" in line for line in stderr)
        wait_for(ready, timeout=240, what="the containerised monitor to be ready")
        print(f"[container] monitor ready {time.monotonic() - started:.1f} s after podman run")

        # `busted ui` on the host reads the runtime directory the container shares.
        sock = shared / "events.sock"
        assert sock.exists() and sock.stat().st_gid == gid

        url = f"https://127.0.0.1:{tls_server}/v1/chat"
        host_mark, ctr_mark = f"host-{uuid.uuid4().hex}", f"ctr-{uuid.uuid4().hex}"
        clients.append(subprocess.Popen(["python3", "-c", CLIENT, url, host_mark]))
        clients.append(subprocess.Popen(
            ["podman", "run", "--rm", "--name", client_name, *podman_args(), "--network", "host",
             "--entrypoint", "python3", image, "-c", CLIENT, url, ctr_mark],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def written(mark):
            return next((e for e in list(events) if e.get("event_type") == "TLS_DATA_WRITE"
                         and mark in (e.get("tls_payload") or "")), None)
        on_host = wait_for(lambda: written(host_mark), timeout=60, what="the host client's write")
        in_ctr = wait_for(lambda: written(ctr_mark), timeout=60, what="the container's write")
        ctr_id = subprocess.run(["podman", "inspect", "--format", "{{.Id}}", client_name],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert not on_host.get("container_id")
        assert in_ctr["container_id"] == ctr_id
        assert in_ctr["process_name"].startswith("python3")
    finally:
        for client in clients:
            client.kill()
        subprocess.run(["podman", "rm", "-f", client_name], capture_output=True, timeout=60)
        subprocess.run(["podman", "stop", "-t", "20", name], capture_output=True, timeout=90)
        try:
            monitor.wait(60)
        except subprocess.TimeoutExpired:
            monitor.kill()
        shutil.rmtree(shared, ignore_errors=True)


def test_compose_monitor_sends_to_the_webhook_receiver(image, tmp_path, tls_server):
    """deploy/docker-compose.yml with podman-compose: the monitor judges with the policies
    volume and the example receiver gets the events. podman-compose 1.0.3 (Debian 12)
    ignores `pid: host`, so it is passed as a run argument, as the README says."""
    if shutil.which("podman-compose") is None:
        pytest.fail("podman-compose is missing: apt-get install -y podman-compose (deploy/setup-host.sh)")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o750)
    project = f"bustedtest{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, BUSTED_IMAGE=image, BUSTED_RUNTIME_DIR=str(runtime),
               BUSTED_GID=str(grp.getgrnam("busted").gr_gid))
    compose = ["podman-compose", "-p", project, "-f", str(REPO / "deploy/docker-compose.yml")]
    run_args = " ".join([*podman_args(), "--pid=host"])
    up = subprocess.run([*compose, f"--podman-run-args={run_args}", "up", "-d"], env=env,
                        capture_output=True, text=True, timeout=180)
    client = None
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]

        def logs(service):
            return subprocess.run(["podman", "logs", f"{project}_{service}_1"],
                                  capture_output=True, text=True, timeout=30)

        def monitor_ready():
            return "capture ready" in logs("monitor").stderr
        wait_for(monitor_ready, timeout=240, what="the compose monitor to be ready")
        mark = f"compose-{uuid.uuid4().hex}"
        client = subprocess.Popen(["python3", "-c", CLIENT, f"https://127.0.0.1:{tls_server}/x", mark])

        def received():
            lines = [json.loads(x) for x in logs("receiver").stdout.splitlines() if x.startswith("{")]
            return [e for e in lines if e.get("event_type") == "TLS_DATA_WRITE"
                    and e.get("process_name", "").startswith("python3")]
        events = wait_for(received, timeout=90, what="the receiver to get the client's write")
        assert all(e.get("policy") for e in events)  # judged with the policies volume
    finally:
        if client is not None:
            client.kill()
        subprocess.run([*compose, "down", "-v", "-t", "20"], env=env, capture_output=True,
                       timeout=180)
        subprocess.run(["podman", "network", "rm", "-f", f"{project}_default"],
                       capture_output=True, timeout=60)
