"""The runtime directory refuses unsafe places and a second monitor."""

from __future__ import annotations

import os

import pytest

from busted.errors import RuntimeDirError
from busted.rundir import Accounts, RuntimeDir

NOBODY = Accounts(None, None, None)


def test_prepare_creates_private_tree_and_locks(tmp_path):
    rd = RuntimeDir(tmp_path / "r", NOBODY)
    rd.prepare()
    assert oct(os.stat(tmp_path / "r").st_mode & 0o777) == "0o750"
    assert oct(os.stat(tmp_path / "r" / "pipe").st_mode & 0o777) == "0o700"
    with pytest.raises(RuntimeDirError, match="already running"):
        RuntimeDir(tmp_path / "r", NOBODY).prepare()
    rd.release()
    RuntimeDir(tmp_path / "r", NOBODY).prepare()  # free again once released


def test_a_symlinked_runtime_dir_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "r").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeDirError, match="not a plain directory"):
        RuntimeDir(tmp_path / "r", NOBODY).prepare()


def test_a_group_writable_runtime_dir_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    os.chmod(tmp_path / "r", 0o770)
    with pytest.raises(RuntimeDirError, match="writable by group"):
        RuntimeDir(tmp_path / "r", NOBODY).prepare()


def test_stale_sockets_of_a_crashed_run_are_removed(tmp_path):
    import socket

    rd = RuntimeDir(tmp_path / "r", NOBODY)
    rd.prepare()
    rd.release()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "r" / "events.sock"))
    stale.close()
    RuntimeDir(tmp_path / "r", NOBODY).prepare()
    assert not (tmp_path / "r" / "events.sock").exists()


def test_too_long_paths_are_refused_early(tmp_path):
    with pytest.raises(RuntimeDirError, match="too long"):
        RuntimeDir(tmp_path / ("x" * 120), NOBODY)
