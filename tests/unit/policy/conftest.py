"""Fixtures for the policy unit tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def policy_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write files {name: text} into a fresh directory and return it."""
    counter = [0]

    def make(**files: str) -> Path:
        counter[0] += 1
        directory = tmp_path / f"p{counter[0]}"
        directory.mkdir()
        for name, text in files.items():
            (directory / name.replace("__", ".")).write_text(text)
        return directory

    return make
