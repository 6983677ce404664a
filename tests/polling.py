"""Waiting for a condition in tests: poll with a deadline, never sleep-and-hope.

Shared by every tier (``pythonpath = ["tests"]`` in pyproject puts this on the path).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 20.0, what: str = "condition",
             interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail with
    ``what`` in the message after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
