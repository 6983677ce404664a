"""OpenSSL discovery and probe placement on this machine's real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from busted.kernel import tls
from busted.kernel.tls import openssl as libssl


def _system_libssl() -> str:
    libs = libssl.system_libraries()
    if not libs:
        pytest.fail("no libssl.so on this host: apt-get install -y libssl3")
    return next((p for p in libs if "libssl.so.3" in p), libs[0])


def test_system_libssl_is_found_with_its_symbols():
    path = _system_libssl()
    syms = libssl.read_symbols(path, libssl.WANTED).symbols
    assert {"SSL_write_ex", "SSL_read_ex", "SSL_write", "SSL_read", "SSL_ctrl"} <= set(syms)


def test_probes_avoid_single_stepped_entries():
    """Every write/read entry probe lands on an instruction the kernel emulates."""
    path = _system_libssl()
    elf = libssl.read_symbols(path)
    sites = libssl.plan(path)
    fns = {s.fn for s in sites}
    assert {"tls_write_ex_enter", "tls_write_return", "tls_read_ex_enter", "tls_read_return",
            "tls_ctrl_enter", "tls_set_fd_enter", "tls_free_enter"} <= fns
    for site in sites:
        if site.fn.startswith(("tls_write", "tls_read")):
            assert libssl.emulated(elf.code(site.addr, 4)), site.describe()
        anchor = elf.symbols[site.sym]
        assert anchor + site.offset == site.addr


def test_call_target_decoding():
    path = _system_libssl()
    elf = libssl.read_symbols(path)
    ex = elf.symbols["SSL_write_ex"]
    code = elf.code(ex, 4)
    if libssl.emulated(code):
        pytest.skip("this libssl's SSL_write_ex entry is already emulated")  # not Debian 12's
    target = libssl.call_target(elf, ex)
    assert target is not None and libssl.emulated(elf.code(target, 2))
    assert libssl.calls(elf, elf.symbols["SSL_write"], target)


def test_node_carries_openssl_itself():
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.fail("node is missing: apt-get install -y nodejs (deploy/setup-host.sh)")
    real = os.path.realpath(node)
    assert libssl.has_openssl(real)
    assert real in tls.programs_on_host()
    assert any(s.sym == "SSL_write_ex" for s in libssl.plan(real))


def test_running_python_maps_libssl():
    code = "import ssl, sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 10
        found: set[str] = set()
        while not found and time.monotonic() < deadline:
            found = tls.targets_of_process(proc.pid)
        assert any("libssl.so" in p for p in found)
        assert libssl.file_key(_system_libssl()) in {libssl.file_key(p) for p in found}
    finally:
        proc.stdin.close()
        proc.wait()


def test_non_elf_files_are_not_openssl(tmp_path):
    junk = tmp_path / "libssl.so.3"
    junk.write_bytes(b"not an elf at all")
    assert not libssl.has_openssl(junk)
    with pytest.raises(libssl.ElfError):
        libssl.read_symbols(junk)
    assert libssl.system_libraries([str(tmp_path)]) == [str(junk)]
