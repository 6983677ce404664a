"""A bounded dict for the kernel sources' per-process and per-connection tables.

Traffic decides how many pids, sockets and connections the monitor sees, so every
table that learns from it forgets its least recently written entries past a limit:
memory stays bounded whatever runs on the host.
"""

from __future__ import annotations

from collections import OrderedDict


class Lru(OrderedDict):
    """A dict that forgets its oldest entries beyond ``limit`` (a write makes an entry
    the newest; a read does not)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)
