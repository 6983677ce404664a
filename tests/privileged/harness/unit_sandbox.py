"""Run a command under the restrictions of a systemd unit file, without systemd.

PID 1 here is not systemd, so the unit cannot be started; this applies what its
hardening settings do, with the same kernel mechanisms, to one command
(tests/privileged/test_systemd_sandbox.py runs ``busted monitor`` under it):

- ``ProtectSystem=strict``, ``ProtectHome=read-only``, ``ProtectKernelTunables=``,
  ``ProtectControlGroups=``: every mount read-only (run inside ``unshare --mount``),
  except the given writable paths (``ReadWritePaths=``, ``StateDirectory=``,
  ``LogsDirectory=``) bound read-write, and ``/proc`` (its ``sys`` read-only);
- ``PrivateTmp=yes``: fresh tmpfs on ``/tmp`` and ``/var/tmp``;
- ``SystemCallFilter=`` (groups expanded by ``systemd-analyze syscall-filter``),
  ``SystemCallErrorNumber=``, ``RestrictAddressFamilies=``: a seccomp filter (libseccomp);
- ``MemoryDenyWriteExecute=``: ``prctl(PR_SET_MDWE)``, inherited by every child;
- ``CapabilityBoundingSet=``, ``NoNewPrivileges=``: ``setpriv``.

Not emulated: ``PrivateDevices=`` (a /dev of its own), ``ProtectClock=``,
``ProtectKernelLogs=`` and ``RestrictNamespaces=`` (busted uses none of these).

Usage (as root): python3 unit_sandbox.py UNIT RW_PATH... -- COMMAND...
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def unit_settings(path: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def read_only_everything(writable: list[str], private_tmp: bool) -> None:
    for path in writable:  # systemd makes StateDirectory= and LogsDirectory= first
        os.makedirs(path, mode=0o750, exist_ok=True)
    mounts = sorted({line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()})
    for point in mounts:
        if point == "/proc" or point.startswith("/dev"):
            continue
        subprocess.run(["mount", "-o", "remount,bind,ro", point], capture_output=True)
    subprocess.run(["mount", "--bind", "/proc/sys", "/proc/sys"], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", "/proc/sys"], check=True)
    for tmp in ("/tmp", "/var/tmp") if private_tmp else ():
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", tmp], check=True)
    for path in writable:
        subprocess.run(["mount", "--bind", path, path], check=True)
        subprocess.run(["mount", "-o", "remount,bind,rw", path], check=True)


def expand(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls a systemd group (or name) stands for."""
    if not group.startswith("@"):
        return {group}
    seen = seen if seen is not None else set()
    if group in seen:
        return set()
    seen.add(group)
    text = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                          text=True, check=True).stdout
    names: set[str] = set()
    for line in text.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            names |= expand(item, seen)
    return names


def seccomp_filter(settings: dict[str, list[str]]):
    import seccomp

    allowed: set[str] = set()
    for value in settings.get("SystemCallFilter", []):
        if value.startswith("~"):
            for item in value[1:].split():
                allowed -= expand(item)
        else:
            for item in value.split():
                allowed |= expand(item)
    error = getattr(errno, settings.get("SystemCallErrorNumber", ["EPERM"])[0])
    filt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(error))
    families = [getattr(socket, f) for v in settings.get("RestrictAddressFamilies", [])
                for f in v.split()]
    if families:  # socket() of any other family is refused
        allowed.discard("socket")
    for name in sorted(allowed):
        try:
            filt.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a system call of this architecture
    for family in families:
        filt.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, family))
    return filt


def main(argv: list[str]) -> None:
    split = argv.index("--")
    unit, writable, command = argv[0], argv[1:split], argv[split + 1:]
    settings = unit_settings(unit)
    read_only_everything(writable, settings.get("PrivateTmp") == ["yes"])
    caps = ",".join("+" + c.lower().removeprefix("cap_")
                    for c in settings["CapabilityBoundingSet"][0].split())
    setpriv = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set=-all,{caps}"]
    if settings.get("NoNewPrivileges") == ["yes"]:
        setpriv.append("--no-new-privs")
    filt = seccomp_filter(settings)
    if settings.get("MemoryDenyWriteExecute") == ["yes"]:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")
    # setpriv runs under the filter too: it needs only calls @system-service allows.
    filt.load()
    os.execvp(setpriv[0], [*setpriv, "--", *command])


if __name__ == "__main__":
    main(sys.argv[1:])
