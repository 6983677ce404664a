"""What every TLS stack module hands the capture: probe sites, and a per-file cache.

A :class:`ProbeSite` is one uprobe (or uretprobe) to attach by address in one file; the
stack modules decide where, ``busted.sources.tls_probes`` attaches them. :class:`PerFile`
remembers an answer per file identity: every exec on the host asks "which TLS stack
does this program carry?", and reading a 400 MB binary twice would be a waste.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ProbeSite:
    """One uprobe (or uretprobe) to attach: ``fn`` at ``addr`` in ``path``.

    ``sym`` + ``offset`` name the place for people (an exported symbol, or "" in a
    stripped binary where ``offset`` is then the address itself).
    """

    path: str
    fn: str  # BPF function in bpf/*.bpf.c
    sym: str  # anchor symbol (exported) ...
    offset: int  # ... plus this offset
    addr: int  # the resulting virtual address
    ret: bool = False  # a return probe
    why: str = ""

    def describe(self) -> str:
        kind = "uretprobe" if self.ret else "uprobe"
        if self.sym:
            where = f"{self.sym}+{self.offset:#x}" if self.offset else self.sym
        else:
            where = f"{self.addr:#x}"
        return f"{kind} {self.path}:{where} -> {self.fn}" + (f" ({self.why})" if self.why else "")


def file_identity(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime): changes when the file is replaced or rewritten."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def fingerprint(path: str | os.PathLike) -> tuple[int, str] | None:
    """Size and a hash of the first and last 64 KiB: copies of one binary (an agent that
    ships its own node, a second install of Claude Code) share one answer."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(65536)
            f.seek(max(0, size - 65536))
            tail = f.read(65536)
    except OSError:
        return None
    return size, hashlib.sha1(head + tail).hexdigest()


class PerFile(Generic[T]):
    """An answer about a file, computed once per identity and once per content.

    ``get(path)`` returns the cached answer for this exact file (same inode, size and
    mtime), else the answer for another file with the same content fingerprint, else
    computes it with ``compute(path)``. Bounded: it forgets everything past ``limit``.
    """

    def __init__(self, compute: Callable[[str], T], limit: int = 4096) -> None:
        self.compute = compute
        self.limit = limit
        self._by_identity: dict[tuple[int, int, int, int], T] = {}
        self._by_content: dict[tuple[int, str], T] = {}

    def get(self, path: str | os.PathLike, default: T) -> T:
        ident = file_identity(path)
        if ident is None:
            return default
        if ident in self._by_identity:
            return self._by_identity[ident]
        content = fingerprint(path)
        if content is not None and content in self._by_content:
            answer = self._by_content[content]
        else:
            answer = self.compute(str(path))
            if content is not None:
                self._remember(self._by_content, content, answer)
        self._remember(self._by_identity, ident, answer)
        return answer

    def _remember(self, table: dict, key: object, answer: T) -> None:
        if len(table) >= self.limit:
            table.clear()
        table[key] = answer

    def clear(self) -> None:
        self._by_identity.clear()
        self._by_content.clear()


class NotLocated(Exception):
    """A file carries a TLS stack but its functions were not found with certainty.

    Nothing is probed then (a wrong address would corrupt the traced program's view
    of nothing, but it would report garbage): the capture records the reason and the
    program's connections show as blind spots.
    """
