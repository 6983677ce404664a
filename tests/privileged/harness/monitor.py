"""The real ``busted monitor --source bpf --format json`` as a subprocess.

Started in a short runtime directory of its own (ipc paths are limited to ~107 bytes), it
is ready when a line containing the word ``ready`` appears on its stderr (every probe
attached). A thread parses stdout — one JSON event per line — into an
:class:`~.events.EventLog`; another keeps stderr for failure messages. ``stop`` sends
SIGTERM, the same shutdown path as Ctrl-C, and returns the exit status.

It also subscribes to the published stream (``events.sock``): those events still carry
the raw ``payload`` bytes that the JSON output never prints, which is how a test checks
what the kernel copied while the classify worker (which turns ``payload`` into
``tls_payload``) is a pass-through placeholder; the ``stats`` messages give the
ring-buffer ``lost`` counter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import zmq

from busted import schema

from .events import EventLog

READY = re.compile(r"\bready\b", re.IGNORECASE)


class MonitorError(AssertionError):
    """The monitor did not start, died, or did not stop cleanly."""


class MonitorProcess:
    def __init__(self, busted: str, extra_args: tuple[str, ...] = (),
                 ready_timeout: float = 180.0, subscribe: bool = True) -> None:
        self.busted = busted
        self.subscribe = subscribe  # events of events.sock too (stats always)
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self._parent = Path(tempfile.mkdtemp(prefix="bm-", dir="/tmp"))  # short path
        # Traversable (not readable) by the unprivileged worker account, as /run is.
        self._parent.chmod(0o711)
        self.runtime_dir = self._parent / "run"
        self.events = EventLog()  # what stdout printed (JSON lines)
        self.published = EventLog()  # what events.sock carried (raw payload included)
        self.stats: dict = {}  # the last stats message of events.sock
        self.events.health = self.published.health = self._health
        self.stderr_lines: deque[str] = deque(maxlen=400)
        self.bad_stdout: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.ready_after_s: float | None = None
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def argv(self) -> list[str]:
        return [self.busted, "monitor", "--source", "bpf", "--format", "json",
                "--runtime-dir", str(self.runtime_dir), *self.extra_args]

    def start(self) -> MonitorProcess:
        started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, preexec_fn=_stop_with_parent)
        self._stop_sub = threading.Event()
        for target, name in ((self._read_stdout, "monitor-stdout"),
                             (self._read_stderr, "monitor-stderr"),
                             (self._subscribe, "monitor-sub")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = started + self.ready_timeout
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None:
                self._join_readers()
                raise MonitorError(f"`{' '.join(self.argv)}` exited with status "
                                   f"{self.proc.returncode} before it was ready:\n{self.stderr_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise MonitorError(f"monitor not ready after {self.ready_timeout:.0f}s "
                                   f"(no 'ready' line on stderr):\n{self.stderr_tail()}")
        self.ready_after_s = time.monotonic() - started
        return self

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for the exit; MonitorError if it hangs. Returns the exit status.

        Capture detaches every uprobe before it exits, one at a time in the kernel
        (~0.1-0.3 s each on the 2-core VM): a session monitor that probed ~100 sites
        (agents, node and libssl copies, Go binaries) takes 15-30 s to stop."""
        assert self.proc is not None
        self._stop_sub.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise MonitorError(f"monitor still running {timeout:.0f}s after SIGTERM:\n"
                                   f"{self.stderr_tail()}") from None
        self._join_readers()
        shutil.rmtree(self._parent, ignore_errors=True)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # The whole group would include workers; the supervisor is ours, kill it and
            # let its workers notice (they watch their parent).
            self.proc.kill()
            self.proc.wait(10)

    def _health(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"the monitor exited with status {self.proc.returncode}:\n{self.stderr_tail(30)}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def counters(self) -> str:
        """The monitor's loss counters, for failure messages (a busy host can overflow it)."""
        if not self.stats:
            return "monitor counters: none received yet"
        keys = ("produced", "delivered", "dropped", "lost", "kernel_lost")
        workers = {role: {k: w.get(k) for k in ("dropped", "errors", "restarts") if w.get(k)}
                   for role, w in (self.stats.get("workers") or {}).items()}
        return ("monitor counters: " + ", ".join(f"{k} {self.stats.get(k)}" for k in keys)
                + f"; workers {({r: c for r, c in workers.items() if c})}")

    def stderr_tail(self, lines: int = 60) -> str:
        return "\n".join(list(self.stderr_lines)[-lines:])

    # --- readers -------------------------------------------------------------------
    def _join_readers(self) -> None:
        for thread in self._threads:
            thread.join(5)

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                self.bad_stdout.append(line[:300])
                continue
            if isinstance(event, dict):
                self.events.add(event)
            else:
                self.bad_stdout.append(line[:300])

    def _subscribe(self) -> None:
        # Connecting before the socket exists is fine: zmq retries until output binds it.
        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"stats")
        if self.subscribe:
            sub.setsockopt(zmq.SUBSCRIBE, b"events")
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(f"ipc://{self.runtime_dir}/events.sock")
        try:
            while not self._stop_sub.is_set():
                if not sub.poll(200):
                    continue
                topic, body = sub.recv_multipart()
                if topic == b"events":
                    for event in schema.decode_batch(body):
                        self.published.add(event)
                elif topic == b"stats":
                    self.stats = msgpack.unpackb(body, raw=False, strict_map_key=False)
        finally:
            sub.close()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_lines.append(line)
            if READY.search(line):
                self._ready.set()


def berko_rule(provider: str) -> str:
    """The seed README's inline rule adapted to ``provider``: deny a request to it whose
    plaintext contains "berko"."""
    return f"""package busted
default decision = "allow"
decision = "deny" {{
    input.llm_provider == "{provider}"
    contains(input.tls_payload, "berko")
}}"""


def start_enforcing(*rules: str, extra_args: tuple[str, ...] = ()) -> MonitorProcess:
    """``busted monitor --enforce EXTRA_ARGS --rule RULE...`` started and ready (its JSON
    output read; events.sock only for stats)."""
    argv = ["--enforce", *extra_args]
    for rule in rules:
        argv += ["--rule", rule]
    return MonitorProcess(find_busted(), extra_args=tuple(argv), subscribe=False).start()


def stop_checked(proc: MonitorProcess) -> None:
    """Stop a monitor that must have stayed up the whole time and exit cleanly."""
    alive = proc.alive()
    status = proc.stop()
    assert alive, f"the monitor died during the tests (status {status}):\n{proc.stderr_tail()}"
    assert status == 0, f"monitor exited with status {status}:\n{proc.stderr_tail()}"


@contextmanager
def enforcing_monitor(*rules: str, extra_args: tuple[str, ...] = ()) -> Iterator[MonitorProcess]:
    """An enforcing monitor (see start_enforcing) for the ``with`` block, checked on a
    normal exit (see stop_checked) and just stopped when the block raised. One enforcing
    monitor per host: a module fixture holds it while its tests run."""
    proc = start_enforcing(*rules, extra_args=extra_args)
    try:
        yield proc
    except BaseException:
        proc.stop()
        raise
    stop_checked(proc)


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM it if the test process dies (no monitor is
    left running, enforcing, after a crashed test run)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def find_busted() -> str:
    """The venv's ``busted`` next to the running Python, else the one on PATH."""
    import sys

    candidate = Path(sys.executable).parent / "busted"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("busted")
    if found is None:
        raise MonitorError("the busted command is not installed in this venv (pip install -e .)")
    return found


def is_root() -> bool:
    return os.geteuid() == 0
