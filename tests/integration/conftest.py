"""Integration tier: the real `busted monitor` with a synthetic or replay source, real
worker processes, real ipc sockets in short temp dirs. No root needed (as root, the
payload-parsing workers really switch to the `busted` account)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from monitor_process import Monitor, busted_cli  # noqa: F401 - re-exported
from polling import wait_for  # noqa: F401 - re-exported for the tests here


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory (ipc paths are limited to ~107 bytes) the worker account can
    traverse."""
    parent = Path(tempfile.mkdtemp(prefix="bt", dir="/tmp"))
    parent.chmod(0o711)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def monitor_factory(short_dir: Path) -> Iterator[Callable[..., Monitor]]:
    started: list[Monitor] = []

    def start(*args: str, name: str = "run", **kwargs) -> Monitor:
        mon = Monitor(short_dir / name, *args, **kwargs)
        started.append(mon)
        return mon

    yield start
    for mon in started:
        mon.kill()
