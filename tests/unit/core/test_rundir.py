"""The runtime directory: created private, an existing one used only when it is safe and
left as it was, one monitor at a time, everything busted made removed again."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from busted.errors import RuntimeDirError
from busted.rundir import Accounts, RuntimeDir

NO_ACCOUNTS = Accounts(None, None, None)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to nobody")


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _socket_file(path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


def _crash(rd: RuntimeDir) -> None:
    """What a killed monitor leaves: its sockets, pipe/ and an unheld lock."""
    _socket_file(rd.root / "control.sock")
    _socket_file(rd.root / "pipe" / "classify.sock")
    os.close(rd._lock_fd)
    rd._lock_fd = None


def test_a_new_directory_is_private_locked_and_removed_at_the_end(tmp_path):
    rd = RuntimeDir(tmp_path / "r", NO_ACCOUNTS)
    rd.prepare()
    assert _mode(tmp_path / "r") == 0o750
    assert _mode(tmp_path / "r" / "pipe") == 0o700
    assert _mode(tmp_path / "r" / "monitor.lock") == 0o600
    with pytest.raises(RuntimeDirError, match="already running"):
        RuntimeDir(tmp_path / "r", NO_ACCOUNTS).prepare()
    rd.release()
    assert not (tmp_path / "r").exists()  # busted made it: busted removes it
    again = RuntimeDir(tmp_path / "r", NO_ACCOUNTS)
    again.prepare()  # free again once released
    again.release()


def test_an_existing_empty_directory_is_used_as_it_is(tmp_path):
    given = tmp_path / "given"
    given.mkdir(mode=0o755)
    before = os.stat(given)
    rd = RuntimeDir(given, NO_ACCOUNTS)
    rd.prepare()
    assert _mode(given) == 0o755  # never chmod-ed nor chown-ed
    rd.release()
    after = os.stat(given)
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid,
                                                          before.st_gid)
    assert os.listdir(given) == []  # ours went, the directory stays


def test_a_directory_with_other_files_is_refused_and_left_alone(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    with pytest.raises(RuntimeDirError, match=r"holds files busted did not create \(passwd\)"):
        RuntimeDir(etc, NO_ACCOUNTS).prepare()
    assert os.listdir(etc) == ["passwd"]
    assert _mode(etc) == 0o755


@pytest.mark.parametrize("mode", [0o770, 0o757, 0o1777])
def test_a_directory_others_can_change_is_refused(tmp_path, mode):
    (tmp_path / "r").mkdir()
    os.chmod(tmp_path / "r", mode)
    with pytest.raises(RuntimeDirError, match="other users can change it"):
        RuntimeDir(tmp_path / "r", NO_ACCOUNTS).prepare()
    assert _mode(tmp_path / "r") == mode and os.listdir(tmp_path / "r") == []


def test_a_directory_inside_one_others_can_change_is_refused(tmp_path):
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)
    with pytest.raises(RuntimeDirError, match="other users can change"):
        RuntimeDir(tmp_path / "open" / "r", NO_ACCOUNTS).prepare()
    assert not (tmp_path / "open" / "r").exists()


def test_a_symlink_or_a_file_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "r").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeDirError, match="not a plain directory"):
        RuntimeDir(tmp_path / "r", NO_ACCOUNTS).prepare()
    (tmp_path / "f").write_text("")
    with pytest.raises(RuntimeDirError, match="not a plain directory"):
        RuntimeDir(tmp_path / "f", NO_ACCOUNTS).prepare()
    assert os.listdir(tmp_path / "elsewhere") == []


@as_root
def test_a_directory_of_another_user_is_refused(tmp_path):
    (tmp_path / "r").mkdir(mode=0o755)
    os.chown(tmp_path / "r", 65534, 65534)
    with pytest.raises(RuntimeDirError, match="belongs to uid 65534"):
        RuntimeDir(tmp_path / "r", NO_ACCOUNTS).prepare()
    assert os.stat(tmp_path / "r").st_uid == 65534


def test_a_killed_runs_leftovers_are_replaced_and_still_removed(tmp_path):
    rd = RuntimeDir(tmp_path / "r", NO_ACCOUNTS)
    rd.prepare()
    _crash(rd)
    after = RuntimeDir(tmp_path / "r", NO_ACCOUNTS)
    after.prepare()
    assert not (tmp_path / "r" / "control.sock").exists()
    assert os.listdir(tmp_path / "r" / "pipe") == []
    assert after.created  # the lock file said busted made the directory
    after.release()
    assert not (tmp_path / "r").exists()


def test_leftovers_in_a_given_directory_are_replaced_but_the_directory_stays(tmp_path):
    given = tmp_path / "given"
    given.mkdir(mode=0o700)
    rd = RuntimeDir(given, NO_ACCOUNTS)
    rd.prepare()
    _crash(rd)
    after = RuntimeDir(given, NO_ACCOUNTS)
    after.prepare()
    assert not after.created
    after.release()
    assert given.is_dir() and os.listdir(given) == [] and _mode(given) == 0o700


def test_our_names_used_for_something_else_are_refused(tmp_path):
    given = tmp_path / "given"
    given.mkdir(mode=0o700)
    (given / "control.sock").write_text("not a socket")
    with pytest.raises(RuntimeDirError, match="not a socket busted made"):
        RuntimeDir(given, NO_ACCOUNTS).prepare()
    assert (given / "control.sock").read_text() == "not a socket"


def test_too_long_paths_are_refused_early(tmp_path):
    with pytest.raises(RuntimeDirError, match="too long"):
        RuntimeDir(tmp_path / ("x" * 120), NO_ACCOUNTS)
