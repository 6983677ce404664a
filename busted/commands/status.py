"""`busted status` and `busted stop`: talk to the running monitor's control socket."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from busted import control_client
from busted.config import DEFAULT_RUNTIME_DIR
from busted.errors import ConnectError

runtime_dir_option = click.option(
    "--runtime-dir", type=click.Path(file_okay=False, readable=False),  # control says why
    default=str(DEFAULT_RUNTIME_DIR),
    show_default=True, help="The monitor's runtime directory.")


@click.command(epilog="\b\nExamples:\n  sudo busted status\n  sudo busted status --json")
@runtime_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw counters as JSON.")
def status(runtime_dir: str, as_json: bool) -> int:
    """Show the running monitor's workers: pids, states, uptimes, restarts, counters."""
    result = control_client.request(Path(runtime_dir), "status")
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        from busted.report import print_status

        print_status(result)
    return 0


@click.command(epilog="\b\nExamples:\n  sudo busted stop")
@runtime_dir_option
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the monitor has exited.")
def stop(runtime_dir: str, wait: bool) -> int:
    """Stop the running monitor (the same orderly shutdown as Ctrl-C)."""
    control_client.request(Path(runtime_dir), "stop")
    if wait:
        sock = Path(runtime_dir) / "control.sock"
        deadline = time.monotonic() + 10
        while sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if sock.exists():
            raise ConnectError("the monitor did not exit within 10 s.")
    click.echo("busted monitor stopped.")
    return 0
