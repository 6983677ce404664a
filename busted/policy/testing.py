"""The ``busted policy test`` runner: every ``test_*`` rule, like ``opa test``.

Tests are the ``test_*`` rules of the ``*_test.rego`` files beside the policies (any
package), loaded together with the policies and ``data.json``. A test passes when its
rule evaluates to ``true``; undefined or any other value fails, an engine error is an
error. Each test runs with coverage on, so for a failure the runner can name the body
expression where evaluation stopped: the last one evaluated before the first one that
was not (the engine records lines, so two expressions on one line are one).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from busted.policy import loader
from busted.policy.engine import run_test


@dataclass
class TestResult:
    test: loader.TestRule
    status: str  # "PASS", "FAIL" or "ERROR"
    duration_s: float
    detail: str = ""  # FAIL: the value when not undefined; ERROR: the engine's message
    failed_at: tuple[int, str] | None = None  # (line, expression) where evaluation stopped
    prints: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


def run(
    dirs: Sequence[Path | str] = (),
    files: Sequence[Path | str] = (),
    pattern: str = "",
) -> list[TestResult]:
    """Load policies and tests, run every test whose ``data.pkg.name`` matches ``pattern``.

    Raises :class:`busted.policy.engine.PolicyLoadError` if anything fails to load.
    """
    policy_set = loader.load(dirs, files=files, include_tests=True)
    # Tests need `with`, which only the interpreter has.
    policy = policy_set.compile(prefer_vm=False)
    selected = re.compile(pattern) if pattern else None
    results = []
    for test in policy_set.tests:
        if selected and not selected.search(test.path):
            continue
        start = time.perf_counter()
        outcome = run_test(policy, test.path)
        duration = time.perf_counter() - start
        if outcome.error:
            results.append(TestResult(test, "ERROR", duration, outcome.error, prints=outcome.prints))
        elif outcome.value is True:
            results.append(TestResult(test, "PASS", duration, prints=outcome.prints))
        else:
            detail = "" if outcome.value is None else f"value {outcome.value!r}"
            where = _stopped_at(test, outcome.covered.get(test.file, set()))
            results.append(TestResult(test, "FAIL", duration, detail, where, outcome.prints))
    return results


def _stopped_at(test: loader.TestRule, covered: set[int]) -> tuple[int, str] | None:
    """The body expression evaluation stopped at, as far as line coverage tells."""
    if not test.statements:
        return None
    last = None
    for line, text in test.statements:
        if line not in covered:
            return last if last is not None else (line, text)
        last = (line, text)
    return last  # every line was reached: the last expression was false


def report(results: list[TestResult], verbose: bool = False) -> list[str]:
    """Lines to print: one per test (failures always, passes when verbose) and a summary."""
    lines: list[str] = []
    current_file = None
    for result in results:
        if not verbose and result.passed:
            continue
        if result.test.file != current_file:
            current_file = result.test.file
            lines.append(f"{current_file}:")
        lines.append(f"{result.test.path}: {result.status} ({_duration(result.duration_s)})")
        if result.status == "ERROR":
            lines.append(f"  error: {result.detail}")
        elif result.status == "FAIL":
            if result.detail:
                lines.append(f"  {result.detail}")
            if verbose and result.failed_at:
                line, text = result.failed_at
                lines.append(f"  failed at {result.test.file}:{line}: {text}")
        if verbose and result.prints and not result.passed:
            lines += [f"  print: {p}" for p in result.prints]
    passed = sum(r.passed for r in results)
    failed = sum(r.status == "FAIL" for r in results)
    errors = sum(r.status == "ERROR" for r in results)
    if lines:
        lines.append("-" * 72)
    summary = [f"PASS: {passed}/{len(results)}"]
    if failed:
        summary.append(f"FAIL: {failed}/{len(results)}")
    if errors:
        summary.append(f"ERROR: {errors}/{len(results)}")
    lines += summary
    return lines


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"
