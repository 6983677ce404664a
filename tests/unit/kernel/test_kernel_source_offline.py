"""KernelSource without the kernel: cflags, --dump-bpf text, and set-up errors."""

from __future__ import annotations

import pytest

from busted.config import MonitorConfig
from busted.errors import KernelError, PrivilegeError
from busted.kernel import features, tls
from busted.sources import kernel


def test_cflags_carry_sizes_and_ports():
    flags = kernel.cflags(MonitorConfig(max_copy=10_000_000, plaintext_ports=(11434, 8080),
                                        ring_pages=1000, peek_copy=10_000_000))
    assert "-DMAX_COPY=4194304" in flags  # clamped to the documented limit
    assert "-DPEEK_COPY=262144" in flags
    assert "-DRING_PAGES=1024" in flags  # a power of two, as the ring requires
    assert {"-DPLAIN_PORT_COUNT=2", "-DPLAIN_PORT0=11434", "-DPLAIN_PORT1=8080"} <= set(flags)
    assert "-DCHUNK_SIZE=16384" in flags


def test_dump_shows_flags_and_every_program_once():
    text = kernel.dump_bpf(MonitorConfig())
    assert text.startswith("/* cflags: -DBUSTED_KERNEL")
    for name in kernel.BASE_PROGRAMS + tls.bpf_programs():
        assert f"/* ---- {name} ---- */" in text
    # the header is inlined once, never #included (bcc rewrites maps only in its text)
    assert text.count("#define BUSTED_H") == 1
    assert '#include "busted.h"' not in text


def test_without_root_the_error_is_a_sentence(monkeypatch):
    monkeypatch.setattr(kernel.os, "geteuid", lambda: 1000)
    with pytest.raises(PrivilegeError) as info:
        kernel.KernelSource(MonitorConfig()).start()
    assert "root" in info.value.message and "sudo" in info.value.hint


def test_missing_tracefs_is_explained(monkeypatch):
    monkeypatch.setattr(kernel.os, "geteuid", lambda: 0)
    found = features.Features([features.Check("tracefs", False, "not mounted"),
                               features.Check("headers", True, ""),
                               features.Check("uprobes", True, "")])
    monkeypatch.setattr(features, "probe", lambda: found)
    with pytest.raises(KernelError) as info:
        kernel.KernelSource(MonitorConfig()).start()
    assert "mount -t tracefs" in info.value.hint
