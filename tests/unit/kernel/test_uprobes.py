"""Which probe sites become uprobe sessions (busted/kernel/uprobes.py), and that every
session program named there exists in the BPF text."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from busted.kernel.tls.elf import ElfFile
from busted.kernel.tls.site import ProbeSite
from busted.kernel.uprobes import SESSIONS, classic_pair, file_offsets, pair_sites

BPF_DIR = Path(__file__).resolve().parents[3] / "bpf"


def site(fn: str, addr: int, ret: bool = False) -> ProbeSite:
    return ProbeSite("/lib/libssl.so.3", fn, "", addr, addr, ret)


def test_entry_and_return_at_one_place_become_one_session():
    sites = [site("tls_write_ex_enter", 0x100), site("tls_write_return", 0x100, True),
             site("tls_read_ex_enter", 0x200), site("tls_read_return", 0x200, True),
             site("tls_ctrl_enter", 0x300), site("tls_free_enter", 0x400)]
    paired, rest = pair_sites(sites)
    assert [s.fn for s in paired] == ["tls_write_ex_enter", "tls_read_ex_enter"]
    assert [s.fn for s in rest] == ["tls_ctrl_enter", "tls_free_enter"]


def test_a_return_probe_elsewhere_or_alone_stays_classic():
    sites = [site("tls_write_enter", 0x100), site("tls_write_return", 0x180, True),
             site("tls_read_return", 0x200, True), site("gotls_write_enter", 0x300)]
    paired, rest = pair_sites(sites)
    assert paired == []
    assert rest == sites


def test_the_classic_pair_is_what_the_session_replaces():
    entry, ret = site("tls_read_enter", 0x500), site("tls_read_return", 0x500, True)
    assert classic_pair(entry) == [entry, ret]


def test_every_session_program_is_in_the_bpf_text():
    text = (BPF_DIR / "tls.bpf.c").read_text()
    defined = set(re.findall(r"^int (\w+)\(struct pt_regs \*ctx\)", text, re.M))
    for entry, (ret, session) in SESSIONS.items():
        assert {entry, ret, session} <= defined, (entry, ret, session)


def test_file_offsets_map_addresses_through_the_loaded_segments():
    exe = sys.executable
    with ElfFile(exe) as elf:
        vaddr, offset, size = next(seg for seg in elf.segments if seg[2] > 0x100)
    assert file_offsets(exe, {vaddr + 0x10}) == {vaddr + 0x10: offset + 0x10}
    with pytest.raises(OSError, match="no loaded segment"):
        file_offsets(exe, {0x7fff_ffff_0000})
    with pytest.raises(OSError):
        file_offsets("/nonexistent/libssl.so.3", {0x1000})
