"""GUI tier: the real `busted ui` window under an Xvfb server these tests start.

The dashboard is observed and driven from outside through its test hooks
(``BUSTED_UI_TEST_DIR``: it writes ``state.json`` and runs ``commands.jsonl``), so
tests wait for a state instead of guessing delays. Screenshots are the window's own
frame buffer (``dpg.output_frame_buffer``), read back with ImageMagick.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from polling import wait_for

BUSTED = [sys.executable, "-m", "busted"]
WIDTH, HEIGHT = 1280, 800


def _free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number between :90 and :199")


@pytest.fixture(scope="session")
def display() -> Iterator[str]:
    """A private Xvfb server (``-ac``: the test also connects as ``nobody``)."""
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed (deploy/setup-host.sh installs it: package xvfb)")
    n = _free_display()
    proc = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp", "-ac"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: Path(f"/tmp/.X11-unix/X{n}").exists() or proc.poll() is not None,
                 timeout=10, what="Xvfb to start")
        if proc.poll() is not None:
            pytest.fail(f"Xvfb exited: {proc.stderr.read().decode(errors='replace')}")
        yield f":{n}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir (ipc socket paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="bg", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Ui:
    """A `busted ui` process with its test hooks."""

    def __init__(self, display: str, hooks_dir: Path, *args: str,
                 prefix: list[str] | None = None) -> None:
        self.hooks_dir = hooks_dir
        hooks_dir.mkdir(parents=True, exist_ok=True)
        self.commands = hooks_dir / "commands.jsonl"
        self.state_path = hooks_dir / "state.json"
        self.sent = 0
        env = dict(os.environ, DISPLAY=display, BUSTED_UI_TEST_DIR=str(hooks_dir))
        env.pop("WAYLAND_DISPLAY", None)
        argv = [*(prefix or []), *BUSTED, "ui", *args]
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self._pump = threading.Thread(target=self._read_stderr, daemon=True)
        self._pump.start()

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def state(self) -> dict | None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"busted ui exited with {self.proc.returncode}:\n" + "\n".join(self.stderr[-30:])
            )
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def wait_state(self, predicate: Callable[[dict], object], timeout: float = 20.0,
                   what: str = "state") -> dict:
        def check():
            state = self.state()
            return state if state is not None and predicate(state) else None

        return wait_for(check, timeout=timeout, what=what)

    def command(self, timeout: float = 20.0, **command) -> dict:
        """Send one command and wait until the window has executed it."""
        with open(self.commands, "a") as f:
            f.write(json.dumps(command) + "\n")
        self.sent += 1
        target = self.sent
        return self.wait_state(lambda s: s.get("commands_done", 0) >= target, timeout,
                               what=f"command {command}")

    def screenshot(self, path: Path) -> Path:
        self.command(cmd="screenshot", path=str(path))
        # The frame buffer is written at the end of a later frame: wait for a whole PNG.
        wait_for(lambda: path.exists() and path.read_bytes()[-8:-4] == b"IEND", timeout=20,
                 what="the screenshot file")
        return path

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                with open(self.commands, "a") as f:
                    f.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@pytest.fixture
def launch(display: str, short_tmp: Path):
    """Start `busted ui ...` processes; all are stopped at the end of the test."""
    started: list[Ui] = []

    def start(*args: str, prefix: list[str] | None = None, hooks_dir: Path | None = None) -> Ui:
        ui = Ui(display, hooks_dir or short_tmp / f"hooks{len(started)}", *args, prefix=prefix)
        started.append(ui)
        return ui

    yield start
    for ui in started:
        ui.stop()


def read_rgb(path: Path) -> tuple[int, int, bytes]:
    """(width, height, raw RGB bytes) of an image, decoded by ImageMagick."""
    if shutil.which("convert") is None:
        pytest.fail("ImageMagick is not installed (deploy/setup-host.sh installs imagemagick)")
    size = subprocess.run(["identify", "-format", "%w %h", str(path)], capture_output=True,
                          text=True, check=True).stdout.split()
    raw = subprocess.run(["convert", str(path), "-depth", "8", "rgb:-"], capture_output=True,
                         check=True).stdout
    width, height = int(size[0]), int(size[1])
    assert len(raw) == width * height * 3
    return width, height, raw


def text_bands(rgb: tuple[int, int, bytes], rect: tuple[int, int, int, int],
               threshold: int = 150) -> int:
    """How many horizontal bands of light pixels (text lines) are inside ``rect``.

    The dashboard draws light text on a dark background, so a rendered table row is a
    band of scanlines holding several light pixels.
    """
    width, _, raw = rgb
    x0, y0, w, h = rect
    bands, inside = 0, False
    for y in range(y0, y0 + h):
        row = raw[(y * width + x0) * 3 : (y * width + x0 + w) * 3]
        light = sum(1 for i in range(0, len(row), 6) if row[i] + row[i + 1] + row[i + 2]
                    > 3 * threshold)
        if light >= 3 and not inside:
            bands += 1
        inside = light >= 3
    return bands
