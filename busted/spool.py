"""A durable, size-capped queue on disk: what a network sink has not delivered yet.

Why: a SIEM restarting for a few seconds, a slow collector or a monitor restart must not
lose events. The output worker appends every event here (local and fast, never waiting on
the network); the sink's sender thread reads batches from it and moves the cursor only
once the receiver acknowledged them. A monitor started later sends what is left.

Layout of one sink's directory (``0700``, files ``0600``, root's when busted runs as root):

- ``NNNNNNNNNNNNNNNN.seg`` — segments, appended in order. A record is a 16-byte header
  (payload length, CRC-32 of timestamp + payload, the wall time it was spooled) and the
  payload (one JSON event). A record cut short by a crash, or damaged, ends its segment:
  the tail is cut off when the spool is opened again.
- ``cursor`` — the first record not yet acknowledged (segment number, offset, CRC-32),
  rewritten in place after each acknowledged batch. If it is unreadable, sending starts
  again at the oldest segment: at-least-once, never less.
- ``lock`` — ``flock``-ed by the one monitor that owns the spool.

The cap (``--spool-max``) counts segment bytes. Only when an append would pass it are the
oldest segments deleted; every event deleted before it was acknowledged is counted as
dropped and logged. If the disk is full, the append fails, is cut off again, and its
events are counted (``disk_errors``) and logged: the pipeline keeps going.

Every file is opened relative to the directory, which was checked once (no other user can
change any directory on the way, see :mod:`busted.rootfiles`) and is closed to others,
and with ``O_NOFOLLOW``: nothing planted in it is followed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from busted.errors import SpoolError, UnsafePathError
from busted.rootfiles import foreign_file, unsafe_path

log = logging.getLogger("busted.spool")

DEFAULT_MAX_BYTES = 1 << 30  # --spool-max
MIN_MAX_BYTES = 64 << 10
ROOT_SPOOL_DIR = Path("/var/lib/busted/spool")
_HEADER = struct.Struct("<IId")  # payload length, CRC-32, time spooled
_CURSOR = struct.Struct("<QQ")  # segment number, offset (+ CRC-32 of these 16 bytes)
_SUFFIX = ".seg"
_READ_CHUNK = 1 << 20
_LOG_EVERY_S = 10.0


def default_dir() -> Path:
    """Root's spool lives in /var/lib/busted/spool; another user's in their home."""
    if os.geteuid() == 0:
        return ROOT_SPOOL_DIR
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return Path(state) / "busted" / "spool"


def check_base(base: Path) -> None:
    """Refuse a spool directory another user could change (before the monitor starts)."""
    reason = unsafe_path(base)
    if reason:
        raise UnsafePathError(f"refusing the spool directory {base}: {reason}.",
                              "Choose one only root can change with --spool-dir "
                              "(default /var/lib/busted/spool).")


def _make_private_dirs(path: Path) -> None:
    """Create the missing directories of ``path``, each 0700 (never chmod-ing one that
    exists: an existing directory is judged, not changed)."""
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SpoolError(f"cannot create the spool directory {directory}: {exc.strerror}.",
                             "Choose another with --spool-dir.") from exc


@dataclass
class _Segment:
    num: int
    size: int = 0  # bytes of whole, valid records
    count: int = 0  # records
    first_ts: float = 0.0


@dataclass(order=True)
class Pos:
    """A place in the spool: segment, byte offset, records before it in that segment."""

    seg: int
    off: int
    idx: int = field(compare=False, default=0)


@dataclass
class Batch:
    records: list[bytes]
    start: Pos
    end: Pos
    per_segment: dict[int, int]  # records of the batch in each segment
    nbytes: int
    first_ts: float


class Spool:
    """One sink's spool. ``append`` is called by the output worker's thread, everything
    else by the sink's sender thread; one lock keeps them apart."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 what: str = "sink") -> None:
        self.path = Path(directory)
        self.what = what
        self.max_bytes = max(MIN_MAX_BYTES, max_bytes)
        self.segment_max = min(64 << 20, max(8 << 10, self.max_bytes // 8))
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.dropped = 0  # events deleted at the cap before they were acknowledged
        self.disk_errors = 0  # events that could not be written (disk full, I/O error)
        self._next_log = 0.0
        self._pending_log = 0
        self._pending_why = ""
        self._dir_fd = self._open_dir()
        self._lock_fd = self._take_lock()
        self._read_fds: dict[int, int] = {}
        self.segments: list[_Segment] = []
        self._load()
        self._cursor_fd = self._open_file("cursor", os.O_RDWR)
        self._write_fd = -1
        self._new_segment()

    # --- files ---------------------------------------------------------------------
    def _open_dir(self) -> int:
        _make_private_dirs(self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise SpoolError(f"cannot open the spool directory {self.path}: {exc.strerror}.",
                             "It must be a directory (not a symbolic link).") from exc
        st = os.fstat(fd)
        problem = None
        if st.st_uid != os.geteuid():
            problem = f"it belongs to uid {st.st_uid}"
        elif st.st_mode & 0o077:
            problem = f"other users may use it (mode {stat.S_IMODE(st.st_mode):04o})"
        if problem:
            os.close(fd)
            raise UnsafePathError(f"refusing the spool directory {self.path}: {problem}; "
                                  "it holds prompts.",
                                  f"chmod 700 {self.path}, or choose another --spool-dir.")
        return fd

    def _open_file(self, name: str, flags: int, create: bool = True) -> int:
        """Open a file of the spool directory: never through a symlink, created 0600,
        and an existing one only if it is a private regular file of ours."""
        base = flags | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            if create:
                try:
                    return os.open(name, base | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=self._dir_fd)
                except FileExistsError:
                    pass
            fd = os.open(name, base, dir_fd=self._dir_fd)
        except OSError as exc:
            problem = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise SpoolError(f"cannot open {self.path / name}: {problem}.",
                             "Remove it, or choose another --spool-dir.") from exc
        problem = foreign_file(os.fstat(fd))
        if problem:
            os.close(fd)
            raise UnsafePathError(f"refusing {self.path / name}: {problem}.",
                                  "Remove it, or choose another --spool-dir.")
        return fd

    def _take_lock(self) -> int:
        fd = self._open_file("lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"another busted monitor is using the spool {self.path} "
                             f"(the same {self.what}).",
                             "Stop it, or give this monitor its own --spool-dir.") from None
        return fd

    @staticmethod
    def _name(num: int) -> str:
        return f"{num:016d}{_SUFFIX}"

    def _segment_fd(self, num: int) -> int:
        fd = self._read_fds.get(num)
        if fd is None:
            fd = self._read_fds[num] = self._open_file(self._name(num), os.O_RDONLY, create=False)
        return fd

    def _remove_segment(self, num: int) -> None:
        fd = self._read_fds.pop(num, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self._name(num), dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass

    # --- opening: what the last monitor left ----------------------------------------
    def _load(self) -> None:
        nums = sorted(int(n[: -len(_SUFFIX)]) for n in os.listdir(self._dir_fd)
                      if n.endswith(_SUFFIX) and n[: -len(_SUFFIX)].isdigit())
        cursor = self._read_cursor()
        # New segments are numbered after anything the cursor or the directory names.
        self._last_num = max([*nums, cursor[0] if cursor else 0])
        for num in nums:
            if cursor is not None and num < cursor[0]:
                self._remove_segment(num)  # acknowledged before the last monitor stopped
                continue
            segment = self._scan(num)
            if segment.count:
                self.segments.append(segment)
            else:
                self._remove_segment(num)
        self.committed = Pos(self.segments[0].num, 0) if self.segments else Pos(0, 0)
        if cursor is not None and self.segments and cursor[0] == self.segments[0].num:
            self.committed = self._locate(self.segments[0], cursor[1])
        self.reading = Pos(self.committed.seg, self.committed.off, self.committed.idx)
        if self.segments:
            log.info("spool %s: %d events left by the last run", self.path, self.spooled_events())

    def _read_cursor(self) -> tuple[int, int] | None:
        try:
            fd = self._open_file("cursor", os.O_RDONLY, create=False)
        except SpoolError:
            return None
        try:
            data = os.read(fd, _CURSOR.size + 4)
        finally:
            os.close(fd)
        if len(data) != _CURSOR.size + 4 or \
                zlib.crc32(data[: _CURSOR.size]) != int.from_bytes(data[_CURSOR.size:], "little"):
            return None
        return _CURSOR.unpack(data[: _CURSOR.size])

    def _records(self, fd: int, start: int = 0):
        """(offset, time spooled, payload) of each valid record from ``start``; stops at
        the end, or at the first record cut short or damaged."""
        buf = b""  # file bytes from offset `at` on
        at = offset = start
        while True:
            rel = offset - at
            if len(buf) - rel < _HEADER.size:
                buf, at, rel = buf[rel:] + os.pread(fd, _READ_CHUNK, at + len(buf)), offset, 0
                if len(buf) < _HEADER.size:
                    return
            length, crc, ts = _HEADER.unpack_from(buf, rel)
            if length > self.max_bytes:
                return  # a damaged header: no record is that large
            end = rel + _HEADER.size + length
            if len(buf) < end:
                buf, at, rel = buf[rel:] + os.pread(fd, max(_READ_CHUNK, end - len(buf)),
                                                    at + len(buf)), offset, 0
                end = _HEADER.size + length
                if len(buf) < end:
                    return
            payload = buf[rel + _HEADER.size:end]
            if zlib.crc32(payload, zlib.crc32(buf[rel + 8:rel + 16])) != crc:
                return
            yield offset, ts, payload
            offset += _HEADER.size + length

    def _scan(self, num: int) -> _Segment:
        fd = self._open_file(self._name(num), os.O_RDWR, create=False)
        try:
            segment = _Segment(num)
            for offset, ts, payload in self._records(fd):
                if not segment.count:
                    segment.first_ts = ts
                segment.count += 1
                segment.size = offset + _HEADER.size + len(payload)
            actual = os.fstat(fd).st_size
            if actual > segment.size:
                log.warning("spool %s: cut %d damaged or incomplete bytes off %s", self.path,
                            actual - segment.size, self._name(num))
                os.ftruncate(fd, segment.size)
            return segment
        finally:
            os.close(fd)

    def _locate(self, segment: _Segment, offset: int) -> Pos:
        """The position of ``offset`` in a segment, if a record starts there; else its start."""
        if offset == 0:
            return Pos(segment.num, 0, 0)
        fd = self._segment_fd(segment.num)
        for idx, (at, _, _) in enumerate(self._records(fd)):
            if at == offset:
                return Pos(segment.num, offset, idx)
        if offset == segment.size:
            return Pos(segment.num, offset, segment.count)
        return Pos(segment.num, 0, 0)

    # --- writing (the output worker's thread) ---------------------------------------
    def _new_segment(self) -> None:
        num = self._last_num + 1
        try:
            fd = self._open_file(self._name(num), os.O_WRONLY | os.O_APPEND)
        except SpoolError:
            if self._write_fd < 0:
                raise
            return  # (disk full?) the current segment grows past its size instead
        self._last_num = num
        if self._write_fd >= 0:
            os.close(self._write_fd)
        self._write_fd = fd
        self.segments.append(_Segment(num))
        if len(self.segments) == 1:
            self.committed = Pos(num, 0, 0)
            self.reading = Pos(num, 0, 0)
            self._write_cursor()

    def append(self, payloads: list[bytes]) -> None:
        """Spool events in order. A call's events are written in pieces of at most a
        segment, so the cap drops the oldest events even when one call is larger than it."""
        if not payloads:
            return
        now = time.time()
        ts_crc = zlib.crc32(struct.pack("<d", now))
        chunks: list[tuple[bytes, int]] = []
        parts: list[bytes] = []
        size = 0
        for payload in payloads:
            record = _HEADER.pack(len(payload), zlib.crc32(payload, ts_crc), now) + payload
            if size and size + len(record) > self.segment_max:
                chunks.append((b"".join(parts), len(parts)))
                parts, size = [], 0
            parts.append(record)
            size += len(record)
        chunks.append((b"".join(parts), len(parts)))
        with self.lock:
            for data, count in chunks:
                self._write(data, count, now)
            self.changed.notify_all()

    def _write(self, data: bytes, count: int, now: float) -> None:
        if len(data) > self.max_bytes:  # one event larger than the whole spool
            self.dropped += count
            self._lose(count, f"an event larger than --spool-max ({self.max_bytes:,} bytes)")
            return
        self._make_room(len(data))
        segment = self.segments[-1]
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._write_fd, view):]
        except OSError as exc:
            try:  # never leave half a record: the next one would be unreadable
                os.ftruncate(self._write_fd, segment.size)
            except OSError:
                pass
            self.disk_errors += count
            self._lose(count, exc.strerror or str(exc))
            return
        if not segment.count:
            segment.first_ts = now
        segment.size += len(data)
        segment.count += count
        if segment.size >= self.segment_max:
            self._new_segment()

    def _make_room(self, need: int) -> None:
        """Delete the oldest segments until ``need`` more bytes fit under the cap."""
        while self.total_bytes() + need > self.max_bytes:
            if len(self.segments) == 1:
                if not self.segments[0].count:
                    return
                self._new_segment()  # the only segment is full of old events: start anew
                if len(self.segments) == 1:
                    return  # no new segment (disk full): nothing can be made room for
            oldest = self.segments.pop(0)
            lost = oldest.count - (self.committed.idx if self.committed.seg == oldest.num else 0)
            self._remove_segment(oldest.num)
            self.dropped += lost
            first = self.segments[0].num
            if self.committed.seg <= oldest.num:
                self.committed = Pos(first, 0, 0)
                self._write_cursor()
            if self.reading.seg <= oldest.num:
                self.reading = Pos(first, 0, 0)
            self._lose(lost, f"the oldest, over --spool-max ({self.max_bytes:,} bytes)")

    def _lose(self, count: int, why: str) -> None:
        """Log losses: the first at once, then a sum every few seconds."""
        self._pending_log += count
        self._pending_why = why
        now = time.monotonic()
        if now >= self._next_log:
            self._log_losses()
            self._next_log = now + _LOG_EVERY_S

    def _log_losses(self) -> None:
        if self._pending_log:
            log.warning("spool %s: lost %d events (%s); %d in all", self.path, self._pending_log,
                        self._pending_why, self.dropped + self.disk_errors)
            self._pending_log = 0

    # --- reading (the sender's thread) ----------------------------------------------
    def read(self, max_records: int, max_bytes: int) -> Batch | None:
        """The next records after the read position (at least one if there is any)."""
        with self.lock:
            self._skip_finished_segment()
            segment = self._segment(self.reading.seg)
            if segment is None or self.reading.idx >= segment.count:
                return None
            start = Pos(self.reading.seg, self.reading.off, self.reading.idx)
            fd = self._segment_fd(segment.num)
            records: list[bytes] = []
            nbytes = 0
            first_ts = 0.0
            pos = self.reading
            for offset, ts, payload in self._records(fd, pos.off):
                if offset >= segment.size or len(records) >= max_records or \
                        (records and nbytes + len(payload) > max_bytes):
                    break
                if not records:
                    first_ts = ts
                records.append(payload)
                nbytes += len(payload)
                pos = Pos(segment.num, offset + _HEADER.size + len(payload), pos.idx + 1)
            if not records:  # damaged on disk since the scan: skip the rest of it
                log.warning("spool %s: %s is unreadable from offset %d; skipped", self.path,
                            self._name(segment.num), pos.off)
                self.dropped += segment.count - pos.idx
                pos = Pos(segment.num, segment.size, segment.count)
            self.reading = pos
            return Batch(records, start, pos, {segment.num: len(records)}, nbytes, first_ts) \
                if records else None

    def _segment(self, num: int) -> _Segment | None:
        for segment in self.segments:
            if segment.num == num:
                return segment
        return None

    def _skip_finished_segment(self) -> None:
        segment = self._segment(self.reading.seg)
        if segment is not None and self.reading.idx >= segment.count and segment is not self.segments[-1]:
            self.reading = Pos(self.segments[self.segments.index(segment) + 1].num, 0, 0)

    def commit(self, batch: Batch) -> int:
        """The receiver acknowledged ``batch``: move the cursor past it. Returns how many
        of its events had been counted as dropped at the cap while it was being sent
        (they arrived after all: they are no longer counted as dropped)."""
        with self.lock:
            first = self.segments[0].num
            revived = sum(n for num, n in batch.per_segment.items() if num < first)
            self.dropped -= revived
            if batch.end > self.committed:
                self.committed = batch.end
                while len(self.segments) > 1 and self.committed.seg == self.segments[0].num \
                        and self.committed.idx >= self.segments[0].count:
                    self._remove_segment(self.segments.pop(0).num)
                    self.committed = Pos(self.segments[0].num, 0, 0)
                self._write_cursor()
            if self.reading < self.committed:
                self.reading = Pos(self.committed.seg, self.committed.off, self.committed.idx)
            return revived

    def rewind(self) -> None:
        """Sending failed: everything not acknowledged is read again."""
        with self.lock:
            self.reading = Pos(self.committed.seg, self.committed.off, self.committed.idx)

    def _write_cursor(self) -> None:
        data = _CURSOR.pack(self.committed.seg, self.committed.off)
        try:
            os.pwrite(self._cursor_fd, data + zlib.crc32(data).to_bytes(4, "little"), 0)
        except OSError as exc:  # the next monitor resends more: nothing is lost
            log.debug("spool %s: cursor not saved: %s", self.path, exc)

    def wait(self, timeout: float) -> None:
        with self.changed:
            if not self._unread_locked():
                self.changed.wait(timeout)

    def wake(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def sync(self) -> None:
        """Flush to the disk (the sender calls this about once a second)."""
        with self.lock:
            fds = [self._write_fd, self._cursor_fd]
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError:
                pass

    # --- figures ---------------------------------------------------------------------
    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def spooled_events(self) -> int:
        return sum(s.count for s in self.segments) - self.committed.idx

    def _unread_locked(self) -> int:
        total = 0
        for segment in self.segments:
            if segment.num > self.reading.seg:
                total += segment.count
            elif segment.num == self.reading.seg:
                total += segment.count - self.reading.idx
        return total

    def unread(self) -> int:
        with self.lock:
            return self._unread_locked()

    def first_unread_time(self) -> float:
        """When the next record to read was spooled (0 when there is none)."""
        with self.lock:
            self._skip_finished_segment()
            segment = self._segment(self.reading.seg)
            if segment is None or self.reading.idx >= segment.count:
                return 0.0
            if self.reading.off == 0:
                return segment.first_ts
            try:
                header = os.pread(self._segment_fd(segment.num), _HEADER.size, self.reading.off)
                return _HEADER.unpack(header)[2]
            except (OSError, struct.error):
                return 0.0

    def stats(self) -> dict[str, float | int]:
        with self.lock:
            oldest = 0.0
            for segment in self.segments:
                if segment.count > (self.committed.idx if segment.num == self.committed.seg else 0):
                    oldest = self._oldest_ts(segment)
                    break
            return {
                "spooled_events": self.spooled_events(),
                "spooled_bytes": self.total_bytes() - self.committed.off,
                "oldest_age_s": round(max(0.0, time.time() - oldest), 3) if oldest else 0.0,
                "dropped": self.dropped,
                "disk_errors": self.disk_errors,
            }

    def _oldest_ts(self, segment: _Segment) -> float:
        if segment.num != self.committed.seg or self.committed.off == 0:
            return segment.first_ts
        try:
            header = os.pread(self._segment_fd(segment.num), _HEADER.size, self.committed.off)
            return _HEADER.unpack(header)[2]
        except (OSError, struct.error):
            return segment.first_ts

    def close(self) -> None:
        with self.lock:
            self._log_losses()
            for fd in (self._write_fd, self._cursor_fd):
                try:
                    os.fsync(fd)
                except OSError:
                    pass
            for fd in (self._write_fd, self._cursor_fd, *self._read_fds.values()):
                os.close(fd)
            self._read_fds.clear()
            self._write_fd = self._cursor_fd = -1
            os.close(self._lock_fd)  # releases the flock
            os.close(self._dir_fd)
