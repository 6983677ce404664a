"""`busted` as a subprocess for tests: the CLI, and a running monitor whose stdout lines
and stderr are collected (shared by the integration and GUI tiers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
from polling import wait_for

BUSTED = [sys.executable, "-m", "busted"]


def busted_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*BUSTED, *args], capture_output=True, text=True, timeout=timeout)


class Monitor:
    """A `busted monitor` subprocess with its stdout lines and stderr collected."""

    def __init__(self, runtime_dir: Path, *args: str, fmt: str = "json",
                 env: dict[str, str] | None = None) -> None:
        self.runtime_dir = runtime_dir
        self.summary_path = runtime_dir.parent / f"{runtime_dir.name}-summary.json"
        self.argv = [*BUSTED, "monitor", "--runtime-dir", str(runtime_dir), "--format", fmt, *args]
        self.lines: list[str] = []
        self.stderr: list[str] = []
        full_env = dict(os.environ, BUSTED_SUMMARY_JSON=str(self.summary_path), **(env or {}))
        # Its own session: a test's Ctrl-C does not reach it, and a hung one can be
        # killed with all its workers.
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=full_env,
                                     start_new_session=True)
        self._threads = [threading.Thread(target=self._pump, args=(s, sink), daemon=True)
                         for s, sink in ((self.proc.stdout, self.lines),
                                         (self.proc.stderr, self.stderr))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream, sink: list[str]) -> None:
        for raw in stream:
            sink.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def events(self) -> list[dict]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def status(self) -> dict:
        result = busted_cli("status", "--json", "--runtime-dir", str(self.runtime_dir))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def wait_running(self, timeout: float = 20.0) -> dict:
        def all_running():
            if self.proc.poll() is not None:
                raise AssertionError(f"monitor exited early:\n{self.stderr_text()}")
            if not (self.runtime_dir / "control.sock").exists():
                return None
            status = self.status()
            return status if all(w["state"] == "running"
                                 for w in status["workers"].values()) else None
        return wait_for(all_running, timeout, "all workers running")

    def worker_pids(self) -> set[int]:
        try:
            return {c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"monitor still running {timeout:.0f}s after signal "
                                 f"{sig}:\n{self.stderr_text()}") from None
        for t in self._threads:
            t.join(5)
        return code

    def wait_exit(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return code

    def summary(self) -> dict:
        return json.loads(self.summary_path.read_text())

    def stderr_text(self) -> str:
        return "\n".join(self.stderr[-80:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
