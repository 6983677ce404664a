"""The ``busted`` command line.

Each subcommand lives in its own module under ``busted.commands`` and is imported only
when it runs, so ``busted monitor`` never imports Dear PyGui and ``busted ui`` never
imports bcc. Expected failures (:class:`busted.errors.BustedError`) are printed as plain
sentences with what to do next; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from busted.errors import BustedError

# name -> ("module:attribute", one-line help shown by `busted --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "monitor": ("busted.commands.monitor:monitor",
                "Run the daemon: capture, classify, judge, output (root)."),
    "status": ("busted.commands.status:status", "Show the running daemon's workers and counters."),
    "stop": ("busted.commands.status:stop", "Stop the running daemon."),
    "ui": ("busted.commands.ui:ui", "Open the desktop dashboard (normal user)."),
    "bench": ("busted.commands.bench:bench", "Measure throughput and overhead of the real components."),
    "classify": ("busted.commands.classify:classify", "Classify captured payload files offline."),
    "policy": ("busted.commands.policy:policy", "Check, evaluate and test Rego policies offline."),
    "doctor": ("busted.commands.doctor:doctor", "Report what this kernel offers and fix mounts/headers."),
    "ml": ("busted.commands.ml:ml", "Recognise LLM traffic by how connections behave (train, eval)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._lazy:
            target, _ = self._lazy[name]
            module_name, attr = target.split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Show the registered one-liners without importing every command module.
        rows = [(name, self._lazy[name][1]) for name in sorted(self._lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def lazy_group(name: str, lazy: dict[str, tuple[str, str]], **kwargs) -> LazyGroup:
    """Build a sub-group (e.g. ``busted bench``) whose commands load lazily."""
    return LazyGroup(name=name, lazy=lazy, **kwargs)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  sudo busted monitor                      watch LLM traffic on this host
  sudo busted monitor --format json        one JSON object per event
  busted ui                                open the dashboard (group busted)
  busted ui --demo                         dashboard with synthetic traffic
  busted policy eval --dir policies/ --input event.json
  busted bench pipeline                    measure the pipeline
""",
)
@click.version_option(package_name="busted")
@click.option("--debug", is_flag=True, help="Verbose logs, and tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Busted: see, judge and stop the LLM and AI-agent conversations leaving this host."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    setup_logging(debug)


def setup_logging(debug: bool) -> None:
    """Logs go to stderr (stdout belongs to event output)."""
    logging.basicConfig(
        level=logging.DEBUG if debug or os.environ.get("BUSTED_DEBUG") else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = cli.main(args=argv, prog_name="busted", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BustedError as exc:
        if debug:
            logging.getLogger("busted").exception("failed")
        click.echo(f"busted: {exc.message}", err=True)
        if exc.hint:
            click.echo(exc.hint, err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    # Commands return an int exit status (or None for success); ctx.exit(n) lands here too.
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
