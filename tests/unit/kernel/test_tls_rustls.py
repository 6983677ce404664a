"""Finding aws-lc's AEAD functions under rustls in stripped binaries (no root needed).

The pinned Codex releases must give the functions that real runs hit (the privileged
test_codex.py checks them end to end); anything short of certainty must raise
NotLocated, and programs without rustls (BoringSSL in Bun, OpenSSL in node) must not be
claimed.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

from busted.kernel.tls import rustls
from busted.kernel.tls.site import NotLocated

CODEX = "/var/cache/busted/agents/codex-{}/package/vendor/x86_64-unknown-linux-musl/bin/codex"
# Checked with uprobe hit counts during real `codex exec` runs (seal_scatter: TLS 1.2).
KNOWN = {
    "0.148.0": {"seal": 0xBB1F430, "open": 0xBB1F670, "init_with_direction": 0xBB1F3B0,
                "init": 0xBB1F2F0, "seal_scatter": 0xBB1F550},
    "0.171.0": {"seal": 0x12629450, "open": 0x12629690, "init_with_direction": 0x12629390,
                "init": 0x126292D0, "seal_scatter": 0x12629570},
}


@pytest.mark.parametrize("version", sorted(KNOWN))
def test_pinned_codex_releases(version):
    path = CODEX.format(version)
    if not Path(path).is_file():
        pytest.skip(f"Codex {version} is not installed (make setup installs it)")
    assert rustls.carries(path)
    sites = rustls.plan(path)
    where = {(s.fn, s.ret): s.addr for s in sites}
    known = KNOWN[version]
    assert where[("aead_seal_enter", False)] == known["seal"]
    assert where[("aead_open_enter", False)] == known["open"]
    assert where[("aead_open_return", True)] == known["open"]
    assert where[("aead_seal_scatter_enter", False)] == known["seal_scatter"]
    inits = sorted(s.addr for s in sites if s.fn == "aead_init_enter")
    assert inits == sorted((known["init_with_direction"], known["init"]))
    assert len(sites) == 6 and all(s.path == path for s in sites)


def test_other_tls_stacks_are_not_claimed():
    candidates = ["/bin/ls", "/usr/bin/node",
                  *glob.glob("/var/cache/busted/agents/bun-*/package/bin/bun")[:1],
                  *glob.glob("/var/cache/busted/agents/claude-*/package/claude")[:1]]
    for path in candidates:
        if Path(path).is_file():
            assert not rustls.carries(path), path


def test_identify_wants_each_set_exactly_once():
    reasons = {0x100: {103, 115, 117}, 0x200: {101, 103, 104, 115}, 0x300: {120},
               0x400: {120, 124}, 0x500: {112, 115}}
    assert rustls.identify(reasons) == {"seal": 0x100, "open": 0x200, "seal_scatter": 0x500,
                                        "init_with_direction": 0x300, "init": 0x400}
    del reasons[0x400]  # EVP_AEAD_CTX_init is not needed
    assert "init" not in rustls.identify(reasons)
    for broken in ({**reasons, 0x600: {103, 115, 117}},  # two seals
                   {k: v for k, v in reasons.items() if k != 0x200},  # no open
                   {**reasons, 0x200: {101, 103, 115}},  # open lost a report
                   {**reasons, 0x700: {120, 124}, 0x800: {120, 124}}):  # two inits
        with pytest.raises(NotLocated):
            rustls.identify(broken)


def test_error_report_instructions():
    # lea rcx,[rip+file] is followed by: mov edi,30; xor esi,esi; mov edx,117; mov r8d,0x77; jmp
    seen_in_codex = bytes.fromhex("bf1e00000031f6ba7500000041b877000000eb57")
    assert rustls._reason_after(seen_in_codex) == 117
    other_library = bytes.fromhex("bf0300000031f6ba7500000041b877000000eb57")
    assert rustls._reason_after(other_library) is None
    unexpected = bytes.fromhex("bf1e0000004889c7ba7500000041b877000000eb57")  # mov rdi,rax
    assert rustls._reason_after(unexpected) is None
    no_call = bytes.fromhex("bf1e00000031f6ba75000000") + b"\x90" * 16
    assert rustls._reason_after(no_call) is None


def _build(tmp_path: Path, strings: list[str]) -> str:
    """A small program whose read-only data holds these strings."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (deploy/setup-host.sh installs it)")
    decls = "\n".join(f'const char s{i}[] = "{s}";' for i, s in enumerate(strings))
    uses = " + ".join(f"s{i}[0]" for i in range(len(strings))) or "0"
    source = tmp_path / "fake.c"
    source.write_text(f"{decls}\nint main(void) {{ return {uses}; }}\n")
    binary = tmp_path / "fake"
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(source)], check=True)
    return str(binary)


def test_rustls_on_ring_is_recognised_but_not_probed(tmp_path):
    path = _build(tmp_path, ["/cargo/registry/src/rustls-0.23.20/src/conn.rs",
                             "/cargo/registry/src/ring-0.17.8/src/aead.rs"])
    assert rustls.carries(path)
    with pytest.raises(NotLocated, match="ring"):
        rustls.plan(path)


def test_aead_named_but_never_reported_is_not_probed(tmp_path):
    path = _build(tmp_path, ["/cargo/registry/src/rustls-0.23.20/src/conn.rs",
                             "/aws-lc/crypto/fipsmodule/cipher/aead.c"])
    with pytest.raises(NotLocated, match="error report"):
        rustls.plan(path)
