"""CLI subcommands, one module each; :mod:`busted.cli` imports them lazily."""
