"""Safe to run as root: the attacks of issue 19, for real, against a root `busted monitor`.

- the runtime directory: an /etc-like directory is refused and left exactly as it was;
  an existing empty one is used as it is and emptied again; a group-writable one is
  refused; a killed monitor's leftovers are replaced;
- files root writes: symlinks and files planted by ``nobody`` in a world-writable sticky
  directory (a private /tmp) are refused, their targets untouched;
- policies: files or directories another user could change are refused at start and at
  reload;
- sockets: ``nobody`` is dropped by the control socket and the event stream even when
  their modes are widened, while a process of group ``busted`` receives the stream and
  the worker account cannot send commands;
- worker processes carry their role's name in comm and cmdline.

The monitors use the synthetic source: what is tested is what root writes and accepts,
not the probes. ``nobody`` really runs (setpriv), so the planted files are really theirs.
"""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from monitor_process import BUSTED, Monitor, busted_cli
from polling import wait_for

from busted.enforce.watchdog import Watchdog
from busted.workers import ROLES

NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
GROUP_BUSTED = ["setpriv", "--reuid", "nobody", "--regid", "busted", "--clear-groups"]
WORKER_ACCOUNT = ["setpriv", "--reuid", "busted", "--regid", "busted", "--clear-groups"]

# Connects as whoever runs it and says what the other end did: "answered" / "received"
# (a reply or an event came), "refused" (the connection was dropped before anything
# came), or prints the reply's error.
PEER = r"""
import sys, time, msgpack, zmq
from zmq.utils.monitor import recv_monitor_message
kind, endpoint, command = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = zmq.Context()
sock = ctx.socket(zmq.SUB if kind == "stream" else zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
if kind == "stream":
    sock.setsockopt(zmq.SUBSCRIBE, b"")
events = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
sock.connect(endpoint)
if kind == "control":
    sock.send(msgpack.packb({"id": "t", "command": command, "args": {}}))
poller = zmq.Poller()
poller.register(sock, zmq.POLLIN)
poller.register(events, zmq.POLLIN)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    ready = dict(poller.poll(1000))
    if sock in ready:
        frames = sock.recv_multipart()
        if kind == "stream":
            print("received")
        else:
            reply = msgpack.unpackb(frames[-1])
            print("answered" if reply.get("ok") else "error: " + reply.get("error", ""))
        break
    if events in ready and recv_monitor_message(events)["event"] == zmq.EVENT_DISCONNECTED:
        print("refused")
        break
else:
    print("timeout")
"""


def _as(prefix: list[str], *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, "env", "HOME=/tmp", *argv], capture_output=True, text=True,
                          timeout=timeout)


def _peer(prefix: list[str], kind: str, endpoint: str, command: str = "status") -> str:
    result = _as(prefix, sys.executable, "-c", PEER, kind, endpoint, command)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _refusal(result: subprocess.CompletedProcess, *words: str) -> None:
    """A refusal: non-zero status, no traceback, one sentence (and a hint line) naming it."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if line.startswith("busted: ") and words[0] in line]
    assert len(lines) == 1 and lines[0].endswith("."), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _gone(pids: set[int]) -> bool:
    """None of these processes runs any more (a zombie awaiting its reaper counts as gone)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def _tree(path: Path) -> dict[str, tuple]:
    """Everything about a directory tree that root must not change."""
    out = {}
    for p in [path, *sorted(path.rglob("*"))]:
        st = os.lstat(p)
        content = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(p.relative_to(path))] = (st.st_mode, st.st_uid, st.st_gid, content)
    return out


@pytest.fixture
def base():
    """A short private directory the worker account may pass through (as /run)."""
    path = Path(tempfile.mkdtemp(prefix="brs", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def world_tmp(base: Path) -> Path:
    """Like /tmp: world-writable and sticky, where ``nobody`` can plant things."""
    path = base / "tmp"
    path.mkdir()
    path.chmod(0o1777)
    return path


@pytest.fixture
def monitors():
    started: list[Monitor] = []

    def start(runtime_dir: Path, *args: str, **kwargs) -> Monitor:
        mon = Monitor(runtime_dir, *args, **kwargs)
        started.append(mon)
        return mon

    yield start
    for mon in started:
        mon.kill()


def _synthetic(*args: str) -> tuple[str, ...]:
    return ("--source", "synthetic", "--rate", "50", *args)


# --- the runtime directory ---------------------------------------------------------------

def test_an_etc_like_directory_is_refused_and_left_exactly_as_it_was(base):
    etc = base / "etc"
    etc.mkdir(mode=0o755)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    (etc / "ssl").mkdir(mode=0o755)
    (etc / "ssl" / "openssl.cnf").write_text("# config\n")
    for p in (etc / "passwd", etc / "resolv.conf", etc / "ssl" / "openssl.cnf"):
        p.chmod(0o644)
    before = _tree(etc)
    result = busted_cli("monitor", *_synthetic(), "--runtime-dir", str(etc))
    _refusal(result, "refusing --runtime-dir", "holds files busted did not create")
    assert _tree(etc) == before  # mode, owner, group and files: nothing changed or added


def test_an_existing_empty_directory_is_used_as_it_is_and_emptied_again(base, monitors):
    given = base / "given"
    given.mkdir(mode=0o755)
    before = os.stat(given)
    mon = monitors(given, *_synthetic(), fmt="none")
    mon.wait_running()
    assert stat.S_IMODE(os.stat(given).st_mode) == 0o755
    assert {p.name for p in given.iterdir()} == {"monitor.lock", "control.sock", "events.sock",
                                                 "pipe"}
    assert mon.stop() == 0, mon.stderr_text()
    after = os.stat(given)
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid,
                                                          before.st_gid)
    assert list(given.iterdir()) == []


def test_a_group_writable_directory_is_refused(base):
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o770)
    os.chown(shared, 0, grp.getgrnam("busted").gr_gid)
    before = _tree(shared)
    result = busted_cli("monitor", *_synthetic(), "--runtime-dir", str(shared))
    _refusal(result, "refusing --runtime-dir", "other users can change it")
    assert _tree(shared) == before


def test_a_killed_monitors_leftovers_are_replaced_and_removed_at_the_end(base, monitors):
    run = base / "run"
    first = monitors(run, *_synthetic(), fmt="none")
    first.wait_running()
    workers = first.worker_pids()
    first.proc.kill()  # SIGKILL: no clean-up at all
    first.proc.wait(10)
    wait_for(lambda: _gone(workers), 30, "the workers to die")
    assert (run / "monitor.lock").exists() and (run / "control.sock").exists()
    second = monitors(run, *_synthetic(), fmt="none")
    # The first run's control.sock is there until the second replaces it: wait for that
    # before asking it anything.
    wait_for(lambda: any("monitor started" in line for line in second.stderr), 60,
             "the second monitor to start")
    second.wait_running()
    assert second.stop() == 0, second.stderr_text()
    assert not run.exists()  # busted made it (the first run): busted removed it


# --- files root writes -------------------------------------------------------------------

def test_planted_symlinks_and_files_are_refused_and_their_targets_untouched(base, world_tmp):
    shadow = base / "shadow"  # stands for /etc/shadow
    shadow.write_text("root:$6$secret:19000:0:99999:7:::\n")
    shadow.chmod(0o640)
    private = base / "private"  # stands for /etc
    private.mkdir(mode=0o755)
    planted = world_tmp / "planted.jsonl"
    for argv in (["ln", "-s", str(shadow), str(world_tmp / "busted.jsonl")],
                 ["ln", "-s", str(private), str(world_tmp / "logs")],
                 ["sh", "-c", f"umask 0; echo theirs > {planted}"]):
        planting = _as(NOBODY, *argv)
        assert planting.returncode == 0, planting.stderr
    cases = [
        (world_tmp / "busted.jsonl", "is a symbolic link in"),
        (world_tmp / "logs" / "busted.jsonl", "is a symbolic link in"),
        (planted, "belongs to uid 65534"),
    ]
    for path, why in cases:
        result = busted_cli("monitor", *_synthetic(), "--output", f"file:{path}",
                            "--runtime-dir", str(base / "run"))
        _refusal(result, "refusing to write the --output file", why)
    assert shadow.read_text() == "root:$6$secret:19000:0:99999:7:::\n"
    assert list(private.iterdir()) == []
    assert planted.read_text() == "theirs\n"
    assert not (base / "run").exists()


def test_the_summary_file_is_not_written_through_a_planted_symlink(base, world_tmp):
    target = base / "target"
    target.write_text("keep\n")
    planting = _as(NOBODY, "ln", "-s", str(target), str(world_tmp / "summary.json"))
    assert planting.returncode == 0, planting.stderr
    result = subprocess.run(
        [*BUSTED, "monitor", *_synthetic("--count", "5", "--exit-when-done"), "--format", "none",
         "--runtime-dir", str(base / "run")],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, BUSTED_SUMMARY_JSON=str(world_tmp / "summary.json")))
    _refusal(result, "refusing to write the summary file", "is a symbolic link in")
    assert target.read_text() == "keep\n"


def test_a_new_output_file_in_a_world_writable_directory_is_private(base, world_tmp, monitors):
    out = world_tmp / "events.jsonl"
    mon = monitors(base / "run", *_synthetic("--count", "20", "--exit-when-done"),
                   "--output", f"file:{out}", fmt="none")
    assert mon.wait_exit(120) == 0, mon.stderr_text()
    st = os.stat(out)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)
    assert len(out.read_text().splitlines()) == 20


# --- policy files ------------------------------------------------------------------------

RULE = 'package busted\nimport rego.v1\naudit contains "seen" if input.pid > 0\n'


def _policy_dir(base: Path, name: str = "policies") -> Path:
    directory = base / name
    directory.mkdir(mode=0o755)
    (directory / "a.rego").write_text(RULE)
    (directory / "a.rego").chmod(0o644)
    return directory


def test_policies_other_users_could_change_are_refused_unless_told(base, monitors):
    policies = _policy_dir(base)
    os.chown(policies / "a.rego", 65534, 65534)
    result = busted_cli("monitor", *_synthetic(), "--policy-dir", str(policies),
                        "--runtime-dir", str(base / "run"))
    _refusal(result, "refusing the policy file", "belongs to uid 65534, not to root")
    assert "--insecure-policy-perms" in result.stderr
    os.chown(policies / "a.rego", 0, 0)
    policies.chmod(0o777)
    result = busted_cli("monitor", *_synthetic(), "--policy-dir", str(policies),
                        "--runtime-dir", str(base / "run"))
    _refusal(result, "refusing the policy directory", "other users may write it (mode 0777)")
    mon = monitors(base / "run", *_synthetic(), "--policy-dir", str(policies),
                   "--insecure-policy-perms", fmt="none")
    mon.wait_running()
    assert mon.stop() == 0, mon.stderr_text()


def test_a_policy_file_added_by_another_user_is_refused_at_reload(base, monitors):
    policies = _policy_dir(base)
    mon = monitors(base / "run", *_synthetic(), "--policy-dir", str(policies), fmt="none")
    mon.wait_running()
    planted = _as(NOBODY, "sh", "-c", f"echo 'package busted' > {policies}/b.rego")
    assert planted.returncode != 0  # the directory is root's: nobody cannot even write there
    (policies / "b.rego").write_text(RULE.replace("seen", "planted"))
    os.chown(policies / "b.rego", 65534, 65534)  # as if it had been
    wait_for(lambda: any("keeping the previous policy: refusing the policy file" in line
                         and "b.rego" in line for line in mon.stderr), 30,
             "the reload to refuse b.rego")
    os.chown(policies / "b.rego", 0, 0)
    wait_for(lambda: any("policy reloaded" in line for line in mon.stderr), 30,
             "the reload once b.rego is root's")
    assert mon.stop() == 0, mon.stderr_text()


# --- sockets and process names ------------------------------------------------------------

@pytest.fixture
def running(base, monitors) -> Monitor:
    mon = monitors(base / "run", *_synthetic(), fmt="none")
    mon.wait_running()
    return mon


def test_the_control_socket_refuses_nobody_even_when_widened(running):
    run = running.runtime_dir
    result = _as(NOBODY, *BUSTED, "status", "--runtime-dir", str(run))
    _refusal(result, "takes commands only from root")
    os.chmod(run, 0o755)  # a careless admin widens everything
    os.chmod(run / "control.sock", 0o666)
    result = _as(NOBODY, *BUSTED, "status", "--runtime-dir", str(run))
    _refusal(result, "takes commands only from root")
    assert "sudo" in result.stderr
    # Past the client's own check, the monitor drops the connection itself.
    assert _peer(NOBODY, "control", f"ipc://{run}/control.sock") == "refused"
    # The worker account reaches the supervisor's pipe socket, but commands are root's.
    answer = _peer(WORKER_ACCOUNT, "control", f"ipc://{run}/pipe/supervisor.sock", "stop")
    assert answer == "error: commands are accepted from root only"
    assert _peer([], "control", f"ipc://{run}/control.sock") == "answered"
    assert running.proc.poll() is None and not running.status()["stopping"]
    assert running.stop() == 0, running.stderr_text()


def test_the_stream_refuses_nobody_and_serves_group_busted(running):
    run = running.runtime_dir
    os.chmod(run, 0o755)
    os.chmod(run / "events.sock", 0o666)
    assert _peer(NOBODY, "stream", f"ipc://{run}/events.sock") == "refused"
    assert _peer(GROUP_BUSTED, "stream", f"ipc://{run}/events.sock") == "received"
    assert running.stop() == 0, running.stderr_text()


def test_worker_processes_carry_their_role_name(running):
    workers = running.status()["workers"]
    for role in ROLES:
        pid = workers[role]["pid"]
        assert Path(f"/proc/{pid}/comm").read_text().strip() == f"busted-{role}"[:15]
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == f"busted: {role}\0".encode()
    listing = subprocess.run(["ps", "-o", "args=", "-p", str(workers["capture"]["pid"])],
                             capture_output=True, text=True, check=True).stdout
    assert listing.strip() == "busted: capture"
    assert running.stop() == 0, running.stderr_text()


def test_the_watchdog_carries_its_name():
    dog = Watchdog(fail_closed=False)
    try:
        wait_for(lambda: Path(f"/proc/{dog.proc.pid}/comm").read_text().strip()
                 == "busted-watchdog", 30, "the watchdog to name itself")
        assert Path(f"/proc/{dog.proc.pid}/cmdline").read_bytes() == b"busted: watchdog\0"
    finally:
        dog.close()
        dog.proc.wait(30)
    assert dog.proc.returncode == 0  # it named itself and still did its job: exit on EOF
