"""`busted policy check|eval|test`: Rego policy tooling that needs no eBPF (CI/CD).

The commands load policies exactly as the monitor's policy worker does (same loader,
same precedence, same input document), so what passes here behaves the same live.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from busted.errors import UsageError

_DIR = click.option(
    "--dir", "dirs", multiple=True, type=click.Path(), metavar="DIR",
    help="Policy directory: every *.rego and data.json in it (repeatable).",
)


@click.group(
    epilog="""\b
Examples:
  busted policy check --dir ./policies/
  echo '{"llm_provider":"Anthropic","pii_detected":true}' | busted policy eval --dir ./policies/
  busted policy test --dir ./policies/ --verbose
""",
)
def policy() -> None:
    """Check, evaluate and test Rego policies offline.

    Policies are Rego in package busted, v0 or v1 syntax. The decision is
    data.busted.decision ("allow", "audit" or "deny"; deny beats audit beats allow
    across all rules and files), or the deny / audit sets of reasons; data.busted.reasons
    adds reasons.
    """


@policy.command(
    epilog="""\b
Examples:
  busted policy check --dir ./policies/
  busted policy check --dir ./policies/ extra/new_rule.rego
  busted policy check my_rule.rego data.json
""",
)
@_DIR
@click.argument("files", nargs=-1, type=click.Path())
def check(dirs: tuple[str, ...], files: tuple[str, ...]) -> int:
    """Parse and compile policies (tests included); list every error.

    Each error is printed as FILE:LINE:COLUMN: reason. Exit status 1 if there is any.
    """
    from busted.policy import loader
    from busted.policy.engine import PolicyLoadError

    _require_sources(dirs, files)
    try:
        policy_set = loader.load(dirs, files=files, include_tests=True)
        policy_set.compile()
    except PolicyLoadError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} error(s)", err=True)
        return 1
    dialects = policy_set.dialects()
    v0 = sum(1 for d in dialects.values() if d == "v0")
    detail = f" ({v0} in Rego v0 syntax)" if v0 else ""
    click.echo(f"ok: {len(dialects)} policy file(s){detail}, {len(policy_set.tests)} test(s)")
    return 0


@policy.command(
    name="eval",
    epilog="""\b
Examples:
  echo '{"llm_provider":"Anthropic","pii_detected":true}' | busted policy eval --dir ./policies/
  busted policy eval --dir ./policies/ --input event.json
  busted policy eval --rule 'package busted
    decision := "deny" if input.llm_provider == "Anthropic"' --input event.json
""",
)
@_DIR
@click.option("--rule", "rules", multiple=True, metavar="REGO", help="Inline Rego policy (repeatable).")
@click.option("--input", "input_path", type=click.Path(allow_dash=True), metavar="FILE|-",
              help="The event as JSON (default: stdin when it is not a terminal, else {}).")
@click.option("--on-error", type=click.Choice(["allow", "deny"]), default="allow", show_default=True,
              help="Decision when evaluation fails (the monitor's --policy-error).")
def eval_(dirs: tuple[str, ...], rules: tuple[str, ...], input_path: str | None, on_error: str) -> int:
    """Evaluate policies against one event and print the result as JSON.

    The event gets every field of the event schema it lacks (with its default), as in
    the monitor. The output holds the decision, the reasons, any error, every decision
    value the rules produced, and the value of each rule of package busted.
    """
    from busted.policy import loader
    from busted.policy.decision import build_decider, input_document

    _require_sources(dirs, (), rules)
    event = _read_input(input_path)
    policy_set = loader.load(dirs, rules)
    decider = build_decider(policy_set, on_error)
    decision = decider.decide(event)
    full_input = input_document(event)
    rules_out = {}
    for name in policy_set.rules():
        try:
            rules_out[name] = decider.policy.eval_rule(f"data.busted.{name}", full_input)
        except Exception as exc:  # noqa: BLE001 - shown, not fatal: the decision stands
            rules_out[name] = {"error": str(exc)}
    output = {
        **decision.as_dict(),
        "engine": "vm" if decider.policy.uses_vm else "interpreter",
        "rules": rules_out,
    }
    click.echo(json.dumps(output, indent=2, sort_keys=False))
    return 0


@policy.command(
    epilog="""\b
Examples:
  busted policy test --dir ./policies/
  busted policy test --dir ./policies/ --verbose
  busted policy test --dir ./policies/ --run 'mcp'
""",
)
@_DIR
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--verbose", "-v", is_flag=True,
              help="List passing tests too, and show where each failing test stopped.")
@click.option("--run", "-r", "pattern", default="", metavar="REGEX",
              help="Only tests whose data.<package>.<name> matches.")
def test(dirs: tuple[str, ...], files: tuple[str, ...], verbose: bool, pattern: str) -> int:
    """Run every test_* rule of the *_test.rego files, like `opa test`.

    A test passes when its rule is true. Prints PASS/FAIL per test with its time (only
    failures unless --verbose) and a summary. Exit status 1 on any failure or error.
    """
    from busted.policy import testing
    from busted.policy.engine import PolicyLoadError

    _require_sources(dirs, files)
    try:
        results = testing.run(dirs, files, pattern)
    except PolicyLoadError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        return 1
    for line in testing.report(results, verbose):
        click.echo(line)
    if not results:
        click.echo("no tests found (test_* rules in *_test.rego files)", err=True)
        return 1
    return 0 if all(r.passed for r in results) else 1


def _require_sources(dirs, files, rules=()) -> None:
    if not (dirs or files or rules):
        raise UsageError("no policies given.", "Use --dir DIR (repeatable), FILES or --rule.")
    for directory in dirs:
        if not Path(directory).is_dir():
            raise UsageError(f"--dir {directory}: no such directory.")


def _read_input(path: str | None) -> dict:
    if path is None:
        text = "{}" if sys.stdin.isatty() else sys.stdin.read()
    elif path == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--input {path}: {exc.strerror or exc}.") from exc
    try:
        event = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise UsageError(f"input is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from exc
    if not isinstance(event, dict):
        raise UsageError("input must be one JSON object (an event).")
    return event
