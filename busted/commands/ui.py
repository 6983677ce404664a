"""`busted ui`: the desktop dashboard, run as a normal user in group ``busted``.

It subscribes to the daemon's published stream (``<runtime_dir>/events.sock``) and
needs no root. Dear PyGui lives in the separate ``busted_gui`` package and is imported
only here, only when the command runs; bcc is never imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from busted.config import DEFAULT_RUNTIME_DIR, Endpoints
from busted.errors import BustedError, DisplayError, UsageError


@click.command(
    epilog="""\b
Examples:
  busted ui                               the daemon at /run/busted (group busted)
  busted ui --demo                        synthetic traffic, no daemon needed
  busted ui --runtime-dir /tmp/bx         a daemon started with --runtime-dir /tmp/bx
  busted ui --endpoint ipc:///tmp/bx/events.sock --max-events 20000
\b
Keyboard: Space pause, / search, Esc clear filters, F1 help.
""",
)
@click.option("--runtime-dir", type=click.Path(file_okay=False, readable=False),
              default=str(DEFAULT_RUNTIME_DIR),
              show_default=True, help="Runtime directory of the daemon to watch.")
@click.option("--endpoint", default=None, metavar="ipc://PATH",
              help="Subscribe to this endpoint instead of <runtime-dir>/events.sock.")
@click.option("--demo", is_flag=True, help="Show built-in synthetic traffic (no daemon).")
@click.option("--demo-rate", type=click.FloatRange(min=0.1), default=40.0, show_default=True,
              help="Demo: mean events per second.")
@click.option("--max-events", type=click.IntRange(min=100, max=1_000_000), default=5000,
              show_default=True, help="Events kept in memory (older ones are forgotten).")
@click.option("--width", type=click.IntRange(min=640), default=1280, show_default=True,
              hidden=True)
@click.option("--height", type=click.IntRange(min=480), default=800, show_default=True,
              hidden=True)
def ui(
    runtime_dir: str,
    endpoint: str | None,
    demo: bool,
    demo_rate: float,
    max_events: int,
    width: int,
    height: int,
) -> None:
    """Open the desktop dashboard: live events, providers, processes and agents."""
    if demo and endpoint:
        raise UsageError("--demo and --endpoint exclude each other.")
    target = endpoint or Endpoints(Path(runtime_dir).absolute()).events
    if not endpoint and len(target) > 107:
        raise UsageError(f"{target} is longer than an ipc path may be (107 bytes).",
                         "Use a shorter --runtime-dir.")
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise DisplayError(
            "No display: `busted ui` opens a desktop window (DISPLAY is not set).",
            "Run it in a graphical session, over `ssh -X`, or under Xvfb: "
            "Xvfb :99 & DISPLAY=:99 busted ui",
        )
    try:
        import dearpygui.dearpygui  # noqa: F401  (only checks that it is installed)
    except ImportError as exc:
        raise BustedError(
            "Dear PyGui is not installed, and `busted ui` needs it.",
            "Install the dashboard extra: pip install 'busted[ui]'",
        ) from exc

    from busted_gui.app import run

    if demo:
        from busted_gui.demo import DemoFeed

        source = DemoFeed(rate=demo_rate)
        title = "Busted — demo"
    else:
        from busted_gui.stream import StreamClient, check_socket, ipc_path

        path = ipc_path(target)
        source = StreamClient(target)
        if path is not None:
            state, message, hint = check_socket(path)
            if state:
                # Said once here; the window shows it too and keeps retrying.
                click.echo(f"busted ui: {message}", err=True)
                if hint:
                    click.echo(hint, err=True)
                source.already_reported(state, message)
        title = "Busted"
    try:
        run(source, max_events=max_events, title=title, width=width, height=height)
    except KeyboardInterrupt:
        sys.exit(130)
