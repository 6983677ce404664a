"""Test hooks: let a test (or a script) observe and drive a running dashboard.

Enabled by the environment variable ``BUSTED_UI_TEST_DIR``. The dashboard then writes
``state.json`` there about four times a second (atomically: written aside, then
renamed) and executes each JSON line appended to ``commands.jsonl`` once, in order:

    {"cmd": "filter", "provider": "OpenAI", "text": "", "pii_only": false, ...}
    {"cmd": "clear_filter"}   {"cmd": "pause"}   {"cmd": "resume"}
    {"cmd": "select", "position": -1}          (a row of the filtered view)
    {"cmd": "select", "match": {"policy": "deny"}}   (the newest such event)
    {"cmd": "tab", "name": "providers"}        (events | providers | processes)
    {"cmd": "help", "show": true}
    {"cmd": "screenshot", "path": "/tmp/x.png"}
    {"cmd": "quit"}

``state.json`` says how many commands were executed (``commands_done``), so a test
waits for its command's effect instead of guessing a delay.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("busted.ui.hooks")

ENV_VAR = "BUSTED_UI_TEST_DIR"
WRITE_INTERVAL_S = 0.25


class TestHooks:
    """Writes snapshots and runs commands; called from the render loop."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.commands_path = self.dir / "commands.jsonl"
        self.done = 0
        self._next_write = 0.0
        self._offset = 0
        self._partial = b""

    @classmethod
    def from_env(cls) -> TestHooks | None:
        directory = os.environ.get(ENV_VAR)
        return cls(directory) if directory else None

    def run_commands(self, execute: Callable[[dict[str, Any]], None]) -> int:
        """Execute the commands appended since the last call (start of a frame)."""
        commands = self._read_commands()
        for command in commands:
            try:
                execute(command)
            except Exception:  # a bad test command must not take the window down
                log.exception("test command failed: %r", command)
            self.done += 1
        if commands:
            self._next_write = 0.0  # report their effect at the end of this frame
        return len(commands)

    def write_state(self, snapshot: Callable[[], dict[str, Any]], now: float | None = None) -> None:
        """Write the state if it is due (end of a frame, after the views were updated)."""
        now = time.monotonic() if now is None else now
        if now < self._next_write:
            return
        self._next_write = now + WRITE_INTERVAL_S
        self.write(snapshot())

    def poll(
        self,
        snapshot: Callable[[], dict[str, Any]],
        execute: Callable[[dict[str, Any]], None],
        now: float | None = None,
    ) -> None:
        """Both steps at once (for callers without a frame to split them around)."""
        self.run_commands(execute)
        self.write_state(snapshot, now)

    def write(self, state: dict[str, Any]) -> None:
        state["commands_done"] = self.done
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, default=str))
        os.replace(tmp, self.state_path)

    def _read_commands(self) -> list[dict[str, Any]]:
        try:
            with open(self.commands_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for its newline
        out = []
        for line in lines:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    log.warning("ignoring a test command that is not JSON: %r", line[:80])
                    self.done += 1
        return out
