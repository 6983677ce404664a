"""The BoringSSL finder on the real pinned binaries (busted/kernel/tls/boringssl.py).

Claude Code and Bun carry BoringSSL with no SSL symbols; the finder names SSL_write,
SSL_read and SSL_do_handshake by the error reports they make. Here, on every pinned
release: each function is found exactly once, the probed instruction is the function's
first (``push rbp``, which the kernel emulates), and an independent mark of the right
function is there: SSL_write and SSL_read test ``ssl->quic_method`` (a compare of
``[reg+0x98]`` with 0) right away, and SSL_read calls ssl_read_impl. A damaged copy is
refused (NotLocated or not claimed) rather than probed at a wrong address; node and the
system libssl are OpenSSL's, never claimed as BoringSSL.

No root is needed by the finder itself; the binaries are installed by ``make setup``.
"""

from __future__ import annotations

import shutil
import struct

import capstone
import pytest

from busted.kernel import tls
from busted.kernel.tls import boringssl, openssl
from busted.kernel.tls.elf import ElfFile

from .harness import agents

pytestmark = pytest.mark.privileged

PINNED = agents.names("claude-") + agents.names("bun-")
_MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def _instructions(path, addr: int, size: int = 64) -> list:
    with ElfFile(path) as elf:
        return list(_MD.disasm(elf.read(addr, size), addr))


def _tests_quic_method(insns: list) -> bool:
    return any(i.mnemonic == "cmp" and "+ 0x98]" in i.op_str and i.op_str.endswith(", 0")
               for i in insns)


@pytest.fixture(scope="module", params=PINNED)
def located(request):
    path = agents.program(request.param)
    return path, boringssl.locate(path)


def test_each_function_is_found_once_with_an_emulated_entry(located):
    path, found = located
    starts = {found.ssl_write, found.ssl_read, found.ssl_do_handshake, found.ssl_read_impl}
    assert len(starts) == 4, found
    for name, addr in (("SSL_write", found.ssl_write), ("SSL_read", found.ssl_read),
                       ("SSL_do_handshake", found.ssl_do_handshake)):
        first = _instructions(path, addr, 16)[0]
        assert (first.mnemonic, first.op_str) == ("push", "rbp"), (name, first)
        assert boringssl.emulated(found.first_bytes[name]), name
    reasons = {name: {reason for reason, _line in pairs} for name, pairs in found.reports.items()}
    assert {111, 66, 226} <= reasons["SSL_write"]
    assert 66 in reasons["SSL_read"] and 226 in reasons["ssl_read_impl"]
    assert 134 in reasons["SSL_do_handshake"]


def test_write_and_read_start_by_testing_the_quic_method(located):
    path, found = located
    assert _tests_quic_method(_instructions(path, found.ssl_write, 96)), "SSL_write"
    assert _tests_quic_method(_instructions(path, found.ssl_read, 48)), "SSL_read"
    read = _instructions(path, found.ssl_read, 160)
    assert any(i.mnemonic == "call" and i.op_str == hex(found.ssl_read_impl) for i in read)


def test_plan_gives_the_five_probes_and_is_cached(located, monkeypatch):
    path, found = located
    assert tls.stack_of(path) is boringssl
    stack, sites = tls.plan(path)
    assert stack == "BoringSSL"
    assert sorted((s.fn, s.addr, s.ret) for s in sites) == sorted([
        ("tls_write_enter", found.ssl_write, False), ("tls_write_return", found.ssl_write, True),
        ("tls_read_enter", found.ssl_read, False), ("tls_read_return", found.ssl_read, True),
        ("tls_handshake_enter", found.ssl_do_handshake, False)])
    assert all(s.path == str(path) for s in sites)
    # a second look at the same file is answered from the per-file cache
    monkeypatch.setattr(boringssl._PLANS, "compute", lambda p: pytest.fail("not cached"))
    assert boringssl.plan(path) == sites


def test_openssl_files_are_not_claimed():
    node = shutil.which("node") or shutil.which("nodejs")
    libs = openssl.system_libraries()
    assert node and libs, "node and libssl3 are installed by make setup"
    for path in [node, *libs]:
        assert not boringssl.carries(path), path
        assert tls.stack_of(path) is openssl, path
    assert not boringssl.carries("/usr/bin/ls")
    with pytest.raises(boringssl.NotLocated):
        boringssl.locate("/usr/bin/ls")


# --- damaged copies: refused, never probed at a wrong address ------------------------------

@pytest.fixture(scope="module")
def bun_copy(tmp_path_factory):
    """A copy of the smallest pinned Bun (~100 MB) to damage, with its intact answer."""
    source = agents.program(agents.names("bun-")[0])
    path = tmp_path_factory.mktemp("damaged") / "bun"
    shutil.copyfile(source, path)
    return path, boringssl.locate(path)


def _patched(path, vaddr: int, data: bytes):
    """Write ``data`` at a virtual address of the file; returns an undo function."""
    with ElfFile(path) as elf:
        offset = elf.offset_of(vaddr)
    with open(path, "r+b") as f:
        f.seek(offset)
        before = f.read(len(data))
        f.seek(offset)
        f.write(data)

    def undo() -> None:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(before)
    return undo


def _refused_or_same(path, intact) -> str:
    try:
        found = boringssl.locate(path)
    except boringssl.NotLocated as exc:
        return str(exc)
    assert (found.ssl_write, found.ssl_read, found.ssl_do_handshake) == (
        intact.ssl_write, intact.ssl_read, intact.ssl_do_handshake), "probed a wrong address"
    return ""


def test_damaged_code_is_refused(bun_copy):
    path, intact = bun_copy
    handshake_calls = [i for i in _instructions(path, intact.ssl_write, 1024)
                       if i.mnemonic == "call" and i.op_str == hex(intact.ssl_do_handshake)]
    assert handshake_calls
    damages = {
        # SSL_write's first instruction becomes a breakpoint: its code no longer decodes
        "SSL_write's entry": [(intact.ssl_write, b"\xcc")],
        # the int3 padding before SSL_read becomes nops: its start is no longer certain
        "the padding before SSL_read": [(intact.ssl_read - 8, b"\x90" * 8)],
        # SSL_write calls something else than SSL_do_handshake
        "SSL_write's calls of SSL_do_handshake": [
            (call.address + 1, struct.pack("<i", intact.ssl_do_handshake + 16 - call.address - 5))
            for call in handshake_calls],
    }
    for what, patches in damages.items():
        undo = [_patched(path, vaddr, data) for vaddr, data in patches]
        try:
            assert _refused_or_same(path, intact), f"damaged {what}, still located"
        finally:
            for step in reversed(undo):
                step()
    assert boringssl.locate(path).ssl_write == intact.ssl_write  # undone


def test_damaged_file_is_not_claimed(bun_copy, tmp_path):
    path, _intact = bun_copy
    with ElfFile(path) as elf:
        where = elf.data.find(boringssl.SOURCE_SUFFIX)
    with open(path, "r+b") as f:  # the ssl_lib.cc path renamed: not BoringSSL any more
        f.seek(where)
        f.write(b"/ssl/ssl_lib.cx")
    try:
        boringssl._CARRIES.clear()  # its fingerprint (head and tail) is the intact file's
        assert not boringssl.carries(path)
        with pytest.raises(boringssl.NotLocated):
            boringssl.locate(path)
    finally:
        with open(path, "r+b") as f:
            f.seek(where)
            f.write(boringssl.SOURCE_SUFFIX[:-1])
    truncated = tmp_path / "truncated"
    with open(path, "rb") as f:
        truncated.write_bytes(f.read(8 << 20))  # section headers are at the end: gone
    assert not boringssl.carries(truncated)
    with pytest.raises(boringssl.NotLocated):
        boringssl.plan(truncated)


def test_rip_relative_loads_are_found_across_search_windows():
    """Position-independent builds load the path with ``lea r, [rip+disp]`` (the pinned
    binaries are not PIE): found wherever they sit, windows' edges included."""
    size, target = (1 << 24) + 4096, (1 << 24) + 2048
    code = bytearray(size)
    wanted = [0, 5000, (1 << 24) - 12, (1 << 24) - 1, (1 << 24) + 10]
    for at in wanted:  # lea rcx, [rip+disp] (48 8d 0d) or lea r9, [rip+disp] (4c 8d 0d)
        code[at:at + 3] = b"\x48\x8d\x0d" if at % 2 else b"\x4c\x8d\x0d"
        code[at + 3:at + 7] = struct.pack("<i", target - (at + 7))
    code[9000:9007] = b"\x48\x8d\x0d" + struct.pack("<i", target - 9000)  # off by 7: not it
    found = boringssl._rip_relative(bytes(code), 0, size, 0, target)
    assert found == [at + 3 for at in wanted]
