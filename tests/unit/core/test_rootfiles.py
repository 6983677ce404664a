"""Files root writes: no symlink, no planted or shared file, new files 0600; and the one
rule for "a directory another user can change"."""

from __future__ import annotations

import os
import stat

import pytest

from busted.errors import UnsafePathError
from busted.rootfiles import (
    check_private,
    open_private,
    others_can_change,
    unsafe_path,
    write_private,
)

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to nobody")


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _world_writable(path, sticky: bool):
    path.mkdir()
    path.chmod(0o1777 if sticky else 0o777)
    return path


def test_the_one_predicate(tmp_path):
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    assert not others_can_change(os.stat(d))
    for mode in (0o775, 0o757, 0o1777):
        d.chmod(mode)
        assert others_can_change(os.stat(d)), oct(mode)
    d.chmod(0o755)
    # Judged for root in a process that runs as another user (the policy worker).
    assert others_can_change(os.stat(d), trusted_uid=NOBODY + 1) == (os.geteuid() not in (0, NOBODY + 1))


@as_root
def test_a_directory_of_another_user_is_changeable(tmp_path):
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    os.chown(d, NOBODY, -1)
    assert others_can_change(os.stat(d))


def test_paths_under_private_directories_are_safe(tmp_path):
    assert unsafe_path(tmp_path / "new" / "file") is None
    assert unsafe_path(tmp_path) is None


def test_a_world_writable_directory_without_sticky_bit_is_unsafe(tmp_path):
    ww = _world_writable(tmp_path / "ww", sticky=False)
    reason = unsafe_path(ww / "busted.jsonl")
    assert reason and str(ww) in reason and "other users can change" in reason


def test_a_sticky_directory_is_safe_for_our_own_entries(tmp_path):
    ww = _world_writable(tmp_path / "ww", sticky=True)
    assert unsafe_path(ww / "busted.jsonl") is None  # missing: we create it
    (ww / "ours").mkdir()
    assert unsafe_path(ww / "ours" / "x") is None


@as_root
def test_a_symlink_planted_in_a_sticky_directory_is_unsafe(tmp_path):
    ww = _world_writable(tmp_path / "ww", sticky=True)
    target = tmp_path / "target"
    target.mkdir()
    link = ww / "dir"
    link.symlink_to(target)
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    reason = unsafe_path(link / "busted.jsonl")
    assert reason and "is a symbolic link in" in reason
    planted = ww / "file"
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    assert "belongs to uid 65534" in unsafe_path(planted)


def test_symlinks_are_followed_and_their_target_judged(tmp_path):
    ww = _world_writable(tmp_path / "ww", sticky=False)
    (tmp_path / "link").symlink_to("ww")  # ours, in a private directory: fine to follow
    reason = unsafe_path(tmp_path / "link" / "x")
    assert reason and str(ww) in reason
    (tmp_path / "loop").symlink_to("loop")
    assert "too many symbolic links" in unsafe_path(tmp_path / "loop" / "x")


def test_a_new_file_is_created_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        fd = open_private(tmp_path / "out.jsonl", "the test file")
    finally:
        os.umask(old)
    os.write(fd, b"one\n")
    os.close(fd)
    assert _mode(tmp_path / "out.jsonl") == 0o600
    fd = open_private(tmp_path / "out.jsonl", "the test file")  # ours: appended to
    os.write(fd, b"two\n")
    os.close(fd)
    assert (tmp_path / "out.jsonl").read_bytes() == b"one\ntwo\n"


def test_a_symlink_is_never_followed_and_its_target_stays_untouched(tmp_path):
    target = tmp_path / "shadow"
    target.write_text("secret\n")
    (tmp_path / "out.jsonl").symlink_to(target)
    for attempt in (lambda: open_private(tmp_path / "out.jsonl", "the test file"),
                    lambda: check_private(tmp_path / "out.jsonl", "the test file")):
        with pytest.raises(UnsafePathError, match="it is a symbolic link"):
            attempt()
    assert target.read_text() == "secret\n"


def test_shared_or_open_files_are_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.write_text("x")
    shared.chmod(0o600)
    os.link(shared, tmp_path / "other-name")
    with pytest.raises(UnsafePathError, match="other hard links"):
        open_private(shared, "the test file")
    readable = tmp_path / "readable"
    readable.write_text("x")
    readable.chmod(0o644)
    with pytest.raises(UnsafePathError, match="other users may read or write it"):
        check_private(readable, "the test file")
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(UnsafePathError):  # refused at once, never waiting for a reader
        open_private(tmp_path / "fifo", "the test file")


@as_root
def test_a_file_of_another_user_is_refused(tmp_path):
    planted = tmp_path / "planted"
    planted.write_text("theirs")
    planted.chmod(0o600)
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(UnsafePathError, match="belongs to uid 65534"):
        open_private(planted, "the test file")
    assert planted.read_text() == "theirs"


def test_write_private_replaces_the_contents(tmp_path):
    write_private(tmp_path / "summary.json", b"a long first version", "the summary")
    write_private(tmp_path / "summary.json", b"short", "the summary")
    assert (tmp_path / "summary.json").read_bytes() == b"short"
    assert _mode(tmp_path / "summary.json") == 0o600


def test_refusals_are_one_sentence_with_what_to_do(tmp_path):
    ww = _world_writable(tmp_path / "ww", sticky=False)
    with pytest.raises(UnsafePathError) as info:
        open_private(ww / "out.jsonl", "the --output file")
    message, hint = info.value.message, info.value.hint
    assert message.startswith("refusing to write the --output file ") and message.endswith(".")
    assert message.count(". ") == 0 and "\n" not in message
    assert hint
    assert not (ww / "out.jsonl").exists()
