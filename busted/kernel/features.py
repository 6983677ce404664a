"""What the running kernel offers the probes, probed without loading anything.

Used by ``busted doctor`` (report and ``--fix``) and by the kernel source before it
compiles, so a missing piece becomes one clear sentence instead of a bcc traceback.
Every check reads files only; ``root`` is injected so tests can point it at a fake tree.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""  # what --fix (or the user) can do


@dataclass
class Features:
    checks: list[Check] = field(default_factory=list)

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def ok(self, name: str) -> bool:
        c = self.get(name)
        return bool(c and c.ok)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def kernel_config(root: Path = Path("/")) -> dict[str, str]:
    """CONFIG_* values from /proc/config.gz or /boot/config-<release> ({} if neither)."""
    text = ""
    gz = root / "proc/config.gz"
    try:
        text = gzip.decompress(gz.read_bytes()).decode("ascii", "replace")
    except OSError:
        text = _read(root / f"boot/config-{os.uname().release}")
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


def tracefs_dir(root: Path = Path("/")) -> Path | None:
    for d in TRACEFS_DIRS:
        p = root / d.lstrip("/")
        if (p / "events").is_dir():
            return p
    return None


def is_mounted(path: str, fstype: str, root: Path = Path("/")) -> bool:
    for line in _read(root / "proc/self/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == path and parts[2] == fstype:
            return True
    return False


def headers_dir(root: Path = Path("/")) -> Path:
    return root / "lib/modules" / os.uname().release / "build"


# Capabilities capture cannot work without (a unit or container that drops them can
# still run as root): number -> (name, why).
NEEDED_CAPS = {
    39: ("CAP_BPF", "load BPF programs and maps"),
    38: ("CAP_PERFMON", "open perf events for tracepoints and uprobes"),
    21: ("CAP_SYS_ADMIN", "attach uprobes (refused without it) and cgroup programs"),
    1: ("CAP_DAC_OVERRIDE", "root workers connect to pipeline sockets the busted account owns"),
}
# Capabilities parts of busted need; without them it runs, with less.
USEFUL_CAPS = {
    19: ("CAP_SYS_PTRACE", "read /proc/PID/exe, maps and root of other users' processes"),
    5: ("CAP_KILL", "resume processes held while their libssl is probed; --enforce"),
    7: ("CAP_SETUID", "switch payload-parsing workers to the busted account"),
    6: ("CAP_SETGID", "switch payload-parsing workers to the busted account"),
    0: ("CAP_CHOWN", "give the runtime directory and events.sock to group busted"),
}


def effective_caps(root: Path = Path("/")) -> int | None:
    """This process's effective capability mask (CapEff in /proc/self/status)."""
    for line in _read(root / "proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return None


def _cap_checks(root: Path) -> list[Check]:
    caps = effective_caps(root)
    if caps is None or os.geteuid() != 0:
        return []  # unknown, or the root check already says what to do
    # A kernel older than 5.8 has no CAP_BPF / CAP_PERFMON (CAP_SYS_ADMIN covers them).
    last = _read(root / "proc/sys/kernel/cap_last_cap").strip()
    if last.isdigit():
        caps |= ~((1 << (int(last) + 1)) - 1)
    # A systemd unit (INVOCATION_ID is set for services) and a container drop them differently.
    where = ("add them to CapabilityBoundingSet= in the unit" if os.environ.get("INVOCATION_ID")
             else "run the container with --privileged or --cap-add them, or widen the "
                  "capability bounding set (systemd: CapabilityBoundingSet=)")
    missing = [f"{n} ({why})" for bit, (n, why) in NEEDED_CAPS.items() if not caps >> bit & 1]
    useful = [f"{n} ({why})" for bit, (n, why) in USEFUL_CAPS.items() if not caps >> bit & 1]
    return [
        Check("capabilities", not missing,
              "missing " + "; ".join(missing) if missing else
              "CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_DAC_OVERRIDE effective", where),
        Check("capabilities:optional", not useful,
              "missing " + "; ".join(useful) if useful else "all capabilities busted uses", where),
    ]


def probe(root: Path = Path("/")) -> Features:
    """Run every check."""
    cfg = kernel_config(root)
    f = Features()
    add = f.checks.append

    def config_check(name: str, key: str, what: str) -> None:
        if not cfg:
            add(Check(name, True, f"{what}: kernel config not readable, assumed present"))
            return
        value = cfg.get(key, "n")
        add(Check(name, value in ("y", "m"), f"{what} ({key}={value})"))

    add(Check("root", os.geteuid() == 0, "running as root" if os.geteuid() == 0 else
              "not root: loading BPF programs needs root (or CAP_BPF + CAP_PERFMON)",
              "run with sudo"))
    f.checks.extend(_cap_checks(root))
    btf = root / "sys/kernel/btf/vmlinux"
    add(Check("btf", btf.exists(), f"BTF at {btf}" if btf.exists() else "no /sys/kernel/btf/vmlinux"))
    config_check("kprobes", "CONFIG_KPROBES", "kprobes")
    config_check("uprobes", "CONFIG_UPROBE_EVENTS", "uprobes")
    config_check("tracepoints", "CONFIG_FTRACE_SYSCALLS", "syscall tracepoints")
    config_check("fentry", "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "fentry/fexit trampolines")
    lsm_list = _read(root / "sys/kernel/security/lsm").strip()
    lockdown = _read(root / "sys/kernel/security/lockdown").strip()
    locked = "[" in lockdown and "[none]" not in lockdown
    bpf_lsm = cfg.get("CONFIG_BPF_LSM") == "y" and "bpf" in lsm_list.split(",") and not locked
    detail = f"BPF LSM {'usable' if bpf_lsm else 'not usable'} (lsm={lsm_list or 'unknown'}"
    detail += f", lockdown {lockdown})" if lockdown else ")"
    add(Check("bpf_lsm", bpf_lsm, detail,
              "boot with lsm=...,bpf and lockdown=none (enforcement falls back to cgroup connect)"))
    cg_root = next((p for p in ("sys/fs/cgroup", "sys/fs/cgroup/unified")
                    if (root / p / "cgroup.procs").exists() and is_mounted("/" + p, "cgroup2", root)),
                   None)
    add(Check("cgroup_v2", cg_root is not None,
              f"cgroup v2 at /{cg_root}" if cg_root else "cgroup v2 not mounted"))
    bpffs = is_mounted("/sys/fs/bpf", "bpf", root)
    add(Check("bpffs", bpffs, "bpffs at /sys/fs/bpf" if bpffs else "bpffs not mounted",
              "mount -t bpf bpf /sys/fs/bpf"))
    tdir = tracefs_dir(root)
    add(Check("tracefs", tdir is not None, f"tracefs at {tdir}" if tdir else "tracefs not mounted",
              "mount -t tracefs nodev /sys/kernel/tracing"))
    secfs = is_mounted("/sys/kernel/security", "securityfs", root)
    add(Check("securityfs", secfs, "securityfs mounted" if secfs else "securityfs not mounted",
              "mount -t securityfs none /sys/kernel/security"))
    hdr = headers_dir(root)
    has_hdr = (hdr / "include").is_dir() or (hdr / "Makefile").exists()
    add(Check("headers", has_hdr,
              f"kernel headers at {hdr}" + (f" -> {os.path.realpath(hdr)}" if has_hdr else ""),
              "link /lib/modules/$(uname -r)/build and source to /usr/src/linux-headers-*"
              + ("; a systemd unit with ProtectKernelModules=yes hides /lib/modules: remove it"
                 if os.environ.get("INVOCATION_ID") else
                 "; in a container, mount the host's /lib/modules and /usr/src read-only")))
    if tdir is not None:
        for event in ("sock/inet_sock_set_state", "sock/sock_send_length",
                      "syscalls/sys_enter_connect", "sched/sched_process_exec"):
            present = (tdir / "events" / event).is_dir()
            add(Check(f"tracepoint:{event}", present,
                      f"tracepoint {event} {'present' if present else 'missing'}"))
    return f


def hooks_plan(f: Features) -> list[str]:
    """Which hooks `busted monitor` will use on this kernel, in words."""
    hooks = []
    if f.ok("tracepoints") and f.ok("tracefs"):
        hooks.append("connections: tracepoint sock:inet_sock_set_state + sock_send/recv_length")
        hooks.append("DNS and plain-text ports: syscall tracepoints (connect, send*, recv*, read, write)")
    if f.ok("kprobes"):
        hooks.append("kprobes available (optional, not needed)")
    if f.ok("uprobes"):
        hooks.append("TLS plaintext: uprobes on OpenSSL (system libssl, private copies, node)")
    hooks.append("new processes: tracepoints sched:sched_process_exec/exit and "
                 "syscalls:sys_enter_openat (a libssl copy is probed when it is opened)")
    hooks.append("enforcement: " + ("BPF LSM socket_connect" if f.ok("bpf_lsm")
                                    else "cgroup connect4/connect6" if f.ok("cgroup_v2") else "none"))
    return hooks
