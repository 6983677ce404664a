"""`busted doctor`: what this kernel offers the probes, and which hooks monitor will use.

Reads only files (no BPF is loaded), so it runs without root; ``--fix`` needs root and
does what the host set-up does: mounts tracefs, bpffs and securityfs, and links
Debian's generic kernel headers as /lib/modules/$(uname -r)/build and source when the
running kernel has none of its own (bcc compiles the probes against them).
``--coverage`` lists every process with TCP peers and how busted sees it
(busted.kernel.tls.coverage), asking the running monitor, if any, what it found blind.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from pathlib import Path

import click

from busted.config import DEFAULT_RUNTIME_DIR
from busted.errors import BustedError, PrivilegeError
from busted.kernel import features, tls

MOUNTS = (
    ("tracefs", "nodev", "/sys/kernel/tracing"),
    ("bpffs", "bpf", "/sys/fs/bpf"),
    ("securityfs", "none", "/sys/kernel/security"),
)
_FSTYPE = {"tracefs": "tracefs", "bpffs": "bpf", "securityfs": "securityfs"}


def _newest(pattern: str) -> str | None:
    found = sorted(glob.glob(pattern), key=lambda p: [int(x) if x.isdigit() else x
                                                      for x in p.replace("-", ".").split(".")])
    return found[-1] if found else None


def fix(found: features.Features) -> list[str]:
    """Mount what is missing and link headers; returns what was done."""
    if os.geteuid() != 0:
        raise PrivilegeError("doctor --fix mounts file systems and links headers: it needs root.",
                             "Run it as: sudo busted doctor --fix")
    done = []
    for name, source, target in MOUNTS:
        if found.ok(name):
            continue
        os.makedirs(target, exist_ok=True)
        result = subprocess.run(["mount", "-t", _FSTYPE[name], source, target],
                                capture_output=True, text=True)
        done.append(f"mount {name} at {target}: " + ("ok" if result.returncode == 0
                                                     else result.stderr.strip() or "failed"))
    if not found.ok("headers"):
        build = features.headers_dir()
        hdr = _newest("/usr/src/linux-headers-*-amd64") or _newest("/usr/src/linux-headers-*-arm64")
        common = _newest("/usr/src/linux-headers-*-common")
        if hdr and common:
            build.parent.mkdir(parents=True, exist_ok=True)
            for link, target in ((build, hdr), (build.parent / "source", common)):
                if link.is_symlink() or not link.exists():
                    if link.is_symlink():
                        link.unlink()
                    link.symlink_to(target)
                    done.append(f"linked {link} -> {target}")
        else:
            done.append("no headers under /usr/src: apt-get install -y linux-headers-amd64, "
                        "then run doctor --fix again")
    return done


@click.command("doctor")
@click.option("--fix", "do_fix", is_flag=True,
              help="Mount tracefs/bpffs/securityfs and link kernel headers if missing (root).")
@click.option("--coverage", is_flag=True,
              help="List every process with TCP peers and how busted sees it (probed TLS "
                   "stack, plain text, or blind and why); exit 3 when a process talking "
                   "to an LLM host is blind.")
@click.option("--json", "as_json", is_flag=True, help="With --coverage: print JSON.")
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=str(DEFAULT_RUNTIME_DIR),
              show_default=True, help="With --coverage: the running monitor to ask.")
def doctor(do_fix: bool, coverage: bool, as_json: bool, runtime_dir: str) -> int:
    """Report what the running kernel offers and which hooks `monitor` will use.

    \b
    Examples:
      busted doctor
      sudo busted doctor --fix
      sudo busted doctor --coverage
      sudo busted doctor --coverage --json
    """
    if coverage:
        return _coverage(Path(runtime_dir), as_json)
    found = features.probe()
    if do_fix:
        for line in fix(found):
            click.echo(f"fix: {line}")
        found = features.probe()
    click.echo(f"kernel {os.uname().release}")
    for check in found.checks:
        mark = "ok  " if check.ok else "MISS"
        line = f"  [{mark}] {check.name:<32} {check.detail}"
        if not check.ok and check.fix:
            line += f"\n         -> {check.fix}"
        click.echo(line)
    click.echo("TLS libraries and programs monitor will probe now:")
    for path in sorted(tls.discover()):
        try:
            stack, sites = tls.plan(path)
        except tls.NotLocated as exc:
            click.echo(f"  {path}  [not probed: {exc}]")
            continue
        except (tls.ElfError, OSError) as exc:
            click.echo(f"  {path}  [unreadable: {exc}]")
            continue
        click.echo(f"  {path}  [{stack}]")
        for site in sites:
            if not site.ret:
                where = site.describe().split(":", 1)[1].split(" -> ")[0]
                click.echo(f"    {site.fn:<20} at {where}" + (f"  ({site.why})" if site.why else ""))
    click.echo("hooks monitor will use:")
    for hook in features.hooks_plan(found):
        click.echo(f"  - {hook}")
    essential = ("root", "capabilities", "tracefs", "headers", "uprobes", "tracepoints")
    missing = [name for name in essential if not found.ok(name)]
    if missing:
        click.echo(f"monitor cannot capture yet: missing {', '.join(missing)}", err=True)
        return 1
    return 0


def _coverage(runtime_dir: Path, as_json: bool) -> int:
    from busted import control_client
    from busted.kernel.tls import coverage

    try:
        blind = control_client.request(runtime_dir, "status").get("blind") or []
        monitor = f"the monitor at {runtime_dir}"
    except BustedError as exc:
        blind, monitor = [], ""
        note = exc.message
    rows = coverage.survey(monitor_blind=blind, skip={os.getpid()})
    code = coverage.exit_code(rows)
    if as_json:
        click.echo(json.dumps({"monitor": monitor, "exit_code": code,
                               "processes": [r.to_dict() for r in rows]}, indent=2))
        return code
    if monitor:
        click.echo(f"Processes with TCP connections (blind connections as reported by {monitor}):")
    else:
        click.echo(f"Processes with TCP connections ({note} Destinations are named only "
                   "by a running monitor.)")
    for r in rows:
        mark = "BLIND" if r.blind else "ok   "
        click.echo(f"  [{mark}] {r.name} ({r.pid}) {r.exe}")
        click.echo(f"          {r.seen}")
        if r.destinations:
            click.echo(f"          to {', '.join(r.destinations)}" + (" (LLM host)" if r.llm else ""))
        click.echo(f"          peers {', '.join(r.peers[:6])}" + (" ..." if len(r.peers) > 6 else ""))
        if r.blind:
            click.echo(f"          why: {r.reason}")
            click.echo(f"          do:  {r.advice}")
    if code:
        click.echo("a process talking to an LLM host is blind: its requests are not seen", err=True)
    return code
