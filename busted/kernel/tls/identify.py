"""Which TLS library made a connection: from its ClientHello and from its process's files.

Blind-spot reports and ``busted doctor --coverage`` must say *why* a program is not
seen, and that starts with naming its TLS library. Two sources, each weak alone:

- the files the process runs: a mapped ``libgnutls.so`` or ``libjvm.so``, an
  executable a stack module of :mod:`busted.kernel.tls` claims, a Go executable. Certain
  about what the process *carries*, but a process may carry several (python maps
  libssl and may load GnuTLS through another module);
- the ClientHello's shape: each library's default cipher-suite order and extensions
  (checked on real hellos: tests/unit/kernel/test_hello.py). It belongs to the
  connection itself, but an application can change the defaults.

:func:`identify` prefers the library both agree on, then a process that carries only
one, then the shape alone. Names are the families in :data:`LIBRARIES`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from busted.kernel.tls.elf import ElfError, ElfFile
from busted.kernel.tls.hello import ClientHello, is_grease
from busted.kernel.tls.site import PerFile

LIBRARIES = ("OpenSSL", "BoringSSL", "GnuTLS", "NSS", "Java", "Go", "rustls")

# Shared objects that name a TLS library (basename patterns of /proc/PID/maps paths).
_LIBRARY_FILES = (
    (re.compile(r"^libgnutls\.so"), "GnuTLS"),
    (re.compile(r"^(libnss3|libssl3)\.so"), "NSS"),  # NSS's libssl3.so, not OpenSSL 3
    (re.compile(r"^libjvm\.so"), "Java"),
    (re.compile(r"^libssl\.so"), "OpenSSL"),
)

TLS13_SUITES = range(0x1301, 0x1306)
SCSV_RENEGOTIATION = 0x00FF
EXT_STATUS_REQUEST_V2 = 17  # only Java's JSSE sends it
EXT_DELEGATED_CREDENTIALS = 34  # NSS (Firefox)


@dataclass(frozen=True)
class Identity:
    library: str  # one of LIBRARIES, or "" when unknown
    why: str


def family(stack_name: str) -> str:
    """A stack module's NAME ("Go crypto/tls", "rustls (aws-lc)") as a family name."""
    first = stack_name.split()[0] if stack_name else ""
    return next((lib for lib in LIBRARIES if lib.lower() == first.lower()), first)


def from_hello(hello: ClientHello) -> Identity:
    """The library a ClientHello's shape points to, or an empty Identity."""
    suites = [s for s in hello.cipher_suites if not is_grease(s)]
    exts = set(hello.extensions)
    tls13 = [s for s in suites if s in TLS13_SUITES]
    first = tuple(tls13[:3])
    if any(is_grease(v) for v in hello.cipher_suites + hello.extensions):
        return Identity("BoringSSL", "GREASE values in the ClientHello")
    if 0x1304 in suites:
        return Identity("GnuTLS", "offers TLS_AES_128_CCM_SHA256 by default")
    if EXT_STATUS_REQUEST_V2 in exts:
        return Identity("Java", "sends the status_request_v2 extension")
    if EXT_DELEGATED_CREDENTIALS in exts or first == (0x1301, 0x1303, 0x1302):
        return Identity("NSS", "NSS's suite order and extensions")
    if tls13 and suites[0] not in TLS13_SUITES:
        return Identity("Go", "lists its TLS 1.3 suites after the TLS 1.2 ones")
    if first == (0x1302, 0x1303, 0x1301):
        return Identity("OpenSSL", "OpenSSL's default TLS 1.3 suite order")
    if first == (0x1301, 0x1302, 0x1303) and SCSV_RENEGOTIATION not in suites:
        return Identity("BoringSSL", "BoringSSL's suite order")
    if first == (0x1302, 0x1301, 0x1303) and SCSV_RENEGOTIATION in suites:
        return Identity("rustls", "rustls's default suite order")
    return Identity("", "")


def process_files(pid: int, proc: str = "/proc") -> tuple[str, set[str]]:
    """(executable, mapped file paths) of a process, as it names them; ("", set())
    once it is gone."""
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        exe = ""
    mapped: set[str] = set()
    try:
        with open(f"{proc}/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    mapped.add(parts[5].strip())
    except OSError:
        pass
    return exe.removesuffix(" (deleted)"), mapped


def _go_executable(path: str) -> bool:
    try:
        with ElfFile(path) as elf:
            return ".go.buildinfo" in elf.sections or ".gopclntab" in elf.sections
    except (ElfError, OSError, AttributeError):
        return False


_GO = PerFile(_go_executable)


def from_files(pid: int, proc: str = "/proc",
               files: tuple[str, set[str]] | None = None) -> dict[str, str]:
    """Every TLS library the process carries -> the file that shows it."""
    from busted.kernel import tls  # the stack dispatcher (imports every stack module)

    exe, mapped = files if files is not None else process_files(pid, proc)
    found: dict[str, str] = {}
    for path in sorted(mapped):
        name = os.path.basename(path)
        for pattern, library in _LIBRARY_FILES:
            if pattern.match(name):
                found.setdefault(library, path)
    if exe:
        exe_path = f"{proc}/{pid}/exe"  # readable whatever mount namespace it lives in
        stack = tls.stack_of(exe_path) if os.path.exists(exe_path) else None
        if stack is not None:
            found.setdefault(family(stack.NAME), exe)
        elif _GO.get(exe_path, False):
            found.setdefault("Go", exe)
    return found


def identify(hello: ClientHello | None, pid: int, proc: str = "/proc",
             files: tuple[str, set[str]] | None = None) -> Identity:
    """The library of one connection of ``pid`` (its hello may be unknown)."""
    shape = from_hello(hello) if hello is not None else Identity("", "")
    carried = from_files(pid, proc, files)
    if shape.library and shape.library in carried:
        return Identity(shape.library, f"{shape.why}; {carried[shape.library]} is loaded")
    if len(carried) == 1:
        library, path = next(iter(carried.items()))
        return Identity(library, f"the process runs {path}")
    if shape.library:
        return Identity(shape.library, f"ClientHello shape: {shape.why}")
    if carried:
        names = ", ".join(sorted(carried))
        return Identity(sorted(carried)[0], f"the process carries several TLS libraries: {names}")
    return Identity("", "no known TLS library in the process or its ClientHello")
