"""Give back the memory that compiling the BPF programs leaves in the capture process.

bcc compiles busted's programs with clang/LLVM inside the capture process, once, at
start. Afterwards the compiler is never used again, yet it stays in capture's memory:

- the pages of ``libLLVM`` and ``libclang-cpp`` that compiling touched (~85 MB here)
  stay mapped, so they count in capture's RSS and PSS although nothing runs them;
- the compiler's freed allocations stay in glibc's heap (~25 MB) until it is trimmed,
  and so do those of reading large executables to find their TLS functions.

:func:`release_compiler_memory` drops both. Dropping the library pages is safe: only
read-only file mappings with no private (copy-on-write) page are dropped, so every
page comes back unchanged from the file if the compiler runs again; the pages stay in
the page cache, where the kernel reclaims them when it needs memory, instead of being
pinned by busted. :func:`trim_heap` alone is cheap enough to call after each large
transient allocation (reading a big executable to find its TLS functions).

Figures: ``busted bench memory`` (bench/README.md, section "Memory").
"""

from __future__ import annotations

import ctypes
import gc
import logging
import re

log = logging.getLogger("busted.capture")

COMPILER_LIBRARIES = ("libLLVM", "libclang", "libcapstone")  # capstone: finding functions
_MADV_DONTNEED = 4
_MAP_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s*(.*)$")


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc: nothing to trim this way
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def trim_heap() -> None:
    """Free unreachable objects, then return the heap's free pages to the kernel
    (glibc's malloc_trim). Finding a BoringSSL build's functions peaks at ~55 MB and
    leaves cycles behind; without this, capture keeps that peak for good."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


_GROWTH_KIB = 16 * 1024
_baseline_kib = 0


def trim_if_grown() -> bool:
    """:func:`trim_heap` when the process grew by more than 16 MB since the last trim:
    cheap enough (one read of /proc/self/statm) to call after every file capture
    examines, which may run at every exec of a program."""
    global _baseline_kib
    rss = _rss_kib()
    if rss - _baseline_kib <= _GROWTH_KIB:
        return False
    trim_heap()
    _baseline_kib = _rss_kib()
    return True


def clean_compiler_mappings(smaps_text: str) -> list[tuple[int, int]]:
    """(start, end) of every read-only, file-backed mapping of the compiler libraries
    that holds no private page, from the text of /proc/PID/smaps."""
    found: list[tuple[int, int]] = []
    current: dict | None = None

    def close(entry: dict | None) -> None:
        if entry and entry["anonymous"] == 0 and entry["rss"] > 0:
            found.append((entry["start"], entry["end"]))

    for line in smaps_text.splitlines():
        head = _MAP_LINE.match(line)
        if head:
            close(current)
            start, end, perms, inode, path = head.groups()
            wanted = (int(inode) != 0 and "w" not in perms and perms[3] == "p"
                      and any(lib in path for lib in COMPILER_LIBRARIES))
            current = ({"start": int(start, 16), "end": int(end, 16), "anonymous": -1,
                        "rss": 0} if wanted else None)
        elif current is not None:
            key, _, value = line.partition(":")
            if key == "Anonymous":
                current["anonymous"] = int(value.split()[0])
            elif key == "Rss":
                current["rss"] = int(value.split()[0])
    close(current)
    return found


def release_compiler_memory() -> int:
    """Drop the compiler's resident pages and trim the heap; the KiB of RSS given back."""
    libc = _libc()
    if libc is None:
        return 0
    before = _rss_kib()
    try:
        with open("/proc/self/smaps") as f:
            ranges = clean_compiler_mappings(f.read())
    except OSError:
        ranges = []
    for start, end in ranges:
        libc.madvise(start, end - start, _MADV_DONTNEED)
    trim_heap()
    global _baseline_kib
    _baseline_kib = _rss_kib()
    freed = max(0, before - _baseline_kib)
    log.debug("released %d KiB of compiler memory (%d mappings)", freed, len(ranges))
    return freed


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    import resource

    return pages * resource.getpagesize() // 1024
