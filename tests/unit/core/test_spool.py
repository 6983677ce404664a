"""The on-disk spool: what is acknowledged leaves, what is not survives a restart, the cap
drops the oldest and counts them, damage and planted files are refused or cut off."""

from __future__ import annotations

import os
import stat

import pytest

from busted.errors import BustedError, UnsafePathError
from busted.spool import MIN_MAX_BYTES, Spool, SpoolError


def _events(start: int, n: int, size: int = 100) -> list[bytes]:
    return [f'{{"n":{i}}}'.encode().ljust(size) for i in range(start, start + n)]


def _numbers(records: list[bytes]) -> list[int]:
    return [int(r.split(b":")[1].split(b"}")[0]) for r in records]


def _drain(spool: Spool, commit: bool = True) -> list[int]:
    got = []
    while (batch := spool.read(7, 1 << 20)) is not None:
        got += _numbers(batch.records)
        if commit:
            spool.commit(batch)
    return got


def test_files_are_private_and_acknowledged_records_leave(tmp_path):
    spool = Spool(tmp_path / "a" / "webhook", 1 << 20)
    spool.append(_events(0, 20))
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "webhook").st_mode) == 0o700
    for name in os.listdir(tmp_path / "a" / "webhook"):
        assert stat.S_IMODE(os.stat(tmp_path / "a" / "webhook" / name).st_mode) == 0o600
    assert spool.stats()["spooled_events"] == 20
    assert _drain(spool) == list(range(20))
    stats = spool.stats()
    assert stats["spooled_events"] == 0 and stats["dropped"] == 0
    spool.close()


def test_a_failed_send_reads_the_same_records_again(tmp_path):
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append(_events(0, 10))
    first = spool.read(4, 1 << 20)
    spool.rewind()
    again = spool.read(4, 1 << 20)
    assert first.records == again.records
    spool.commit(again)
    assert _drain(spool) == list(range(4, 10))
    spool.close()


def test_a_restart_resends_what_was_not_acknowledged(tmp_path):
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append(_events(0, 30))
    batch = spool.read(10, 1 << 20)
    spool.commit(batch)
    spool.read(10, 1 << 20)  # read, never acknowledged
    spool.close()
    again = Spool(tmp_path / "s", 1 << 20)
    assert again.stats()["spooled_events"] == 20
    again.append(_events(30, 5))
    assert _drain(again) == list(range(10, 35))
    again.close()
    third = Spool(tmp_path / "s", 1 << 20)
    assert third.stats()["spooled_events"] == 0 and third.read(10, 1 << 20) is None
    third.close()


def test_the_cap_drops_the_oldest_and_counts_exactly(tmp_path):
    spool = Spool(tmp_path / "s", MIN_MAX_BYTES)
    total = 3000  # ~350 KB of records into a 64 KiB spool
    for start in range(0, total, 50):
        spool.append(_events(start, 50))
    stats = spool.stats()
    assert stats["dropped"] > 0
    assert os.path.getsize(tmp_path / "s") >= 0
    assert sum(os.path.getsize(tmp_path / "s" / n) for n in os.listdir(tmp_path / "s")
               if n.endswith(".seg")) <= MIN_MAX_BYTES
    left = _drain(spool)
    assert left == list(range(stats["dropped"], total))  # the newest, in order, none twice
    spool.close()


def test_a_batch_in_flight_when_its_segment_is_dropped_is_not_counted_twice(tmp_path):
    spool = Spool(tmp_path / "s", MIN_MAX_BYTES)
    spool.append(_events(0, 50))
    batch = spool.read(20, 1 << 20)  # being sent
    for start in range(50, 2000, 50):
        spool.append(_events(start, 50))
    dropped = spool.stats()["dropped"]
    assert dropped >= 50
    assert spool.commit(batch) == 20  # it arrived after all
    assert spool.stats()["dropped"] == dropped - 20
    spool.close()


def test_a_record_cut_short_by_a_crash_is_cut_off(tmp_path):
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append(_events(0, 5))
    segment = sorted(n for n in os.listdir(tmp_path / "s") if n.endswith(".seg"))[-1]
    spool.close()
    with open(tmp_path / "s" / segment, "ab") as f:
        f.write(b"\x50\x00\x00\x00garbage")
    again = Spool(tmp_path / "s", 1 << 20)
    assert _drain(again) == list(range(5))
    again.close()


def test_a_damaged_cursor_resends_from_the_oldest(tmp_path):
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append(_events(0, 5))
    spool.commit(spool.read(3, 1 << 20))
    spool.close()
    (tmp_path / "s" / "cursor").write_bytes(b"\x00" * 20)
    again = Spool(tmp_path / "s", 1 << 20)
    assert _drain(again) == list(range(5))  # at least once: more, never less
    again.close()


def test_one_monitor_per_spool(tmp_path):
    spool = Spool(tmp_path / "s", 1 << 20)
    with pytest.raises(SpoolError, match="another busted monitor"):
        Spool(tmp_path / "s", 1 << 20)
    spool.close()


def test_a_planted_symlink_is_not_followed(tmp_path):
    directory = tmp_path / "s"
    directory.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, directory / "lock")
    with pytest.raises(BustedError, match="symbolic link"):
        Spool(directory, 1 << 20)
    assert victim.read_text() == "keep"


def test_a_directory_open_to_others_is_refused(tmp_path):
    directory = tmp_path / "s"
    directory.mkdir()
    directory.chmod(0o755)
    with pytest.raises(UnsafePathError, match="chmod 700"):
        Spool(directory, 1 << 20)


def test_a_full_disk_loses_the_append_and_counts_it(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append(_events(0, 3))
    real_write = os.write

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    spool.append(_events(3, 4))
    monkeypatch.setattr(os, "write", real_write)
    spool.append(_events(7, 2))
    assert spool.stats()["disk_errors"] == 4
    assert _drain(spool) == [0, 1, 2, 7, 8]
    spool.close()


def test_one_append_larger_than_the_cap_keeps_its_newest_events(tmp_path):
    spool = Spool(tmp_path / "s", MIN_MAX_BYTES)
    spool.append(_events(0, 2000))  # ~230 KB in one call
    dropped = spool.stats()["dropped"]
    assert 0 < dropped < 2000
    assert _drain(spool) == list(range(dropped, 2000))
    spool.close()
