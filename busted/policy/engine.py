"""The one adapter over the Python ``regorus`` module (Rego evaluated in-process).

Nothing else in Busted imports ``regorus``: swapping the engine means rewriting this
module only. It offers three things: :func:`parse` (one module, one dialect, with its
syntax tree), :class:`CompiledPolicy` (a set of modules plus data, evaluated against one
input at a time) and :class:`Problem` (an engine error translated to file:line:col and a
one-line reason).

Which ``regorus``: PyPI has no package of that name; forks publish the module. We pin
``gordon-to-regorus==0.13.0`` (a re-publication of microsoft/regorus kept in sync with
upstream) rather than ``celine-regorus`` (0.9.1, an older upstream). Measured side by
side on this VM, shipped policy set, the 17 sample events of
:mod:`busted.policy.samples`, ``set_input_json`` + one evaluation, in CPU instructions
per evaluation (cachegrind; the shared VM's wall-clock figures swung 2-3x with load):

- celine 0.9.1 interpreter: ~593k; it has no compiled path;
- gordon-to 0.13 interpreter: ~789k (its interpreter is ~30% slower than 0.9.1's);
- gordon-to 0.13 compiled VM (``Program`` + ``Rvm``): ~155k, 3.8x fewer than celine.

Only the VM path can reach the 20k evaluations/s goal with every shipped policy
loaded; 0.13 also returns integral numbers as ints (0.9.1 returns floats) and has the
coverage and print gathering ``busted policy test --verbose`` uses. The interpreter
API is the same in both forks, so swapping means editing this module only. The VM is
young, hence the safety nets below.

How evaluation is done:

- The VM compiler only reads Rego v1. When every module parses as v1 (files using
  ``import rego.v1`` count) the VM evaluates; otherwise (a Rego v0 file such as the
  seed README's examples) the interpreter does. Both produce the same result document.
- The VM compile pass doubles as a semantic check: its errors that carry a position
  (unknown function, unsafe variable) are the policy's and fail the load; errors
  without one ("Missing builtin function: print") are VM gaps, and the interpreter
  takes over.
- Measured with 0.13: the VM lets an undefined value through assignments and builtin
  calls (``x := lower(input.missing)`` succeeds) and prints it as ``"<undefined>"``. So
  :meth:`CompiledPolicy.verify_vm` compares VM and interpreter on sample events at load
  and drops the VM if they ever disagree, and any result that contains the marker, or
  any VM run that raises, is evaluated again on the interpreter.
- The v0/v1 flag of the interpreter is read when a policy is *added*, so it is set per
  module right before ``add_policy`` (a v1 module added in v0 mode parses with only a
  warning and then evaluates wrongly).

Traps handled here (each met on this engine in practice):

- A ``regorus.Engine`` must only be used by the thread that created it; a use from
  another thread panics, and a Rust panic surfaces as ``PanicException``, which derives
  from ``BaseException``. :class:`CompiledPolicy` remembers its thread and uses separate
  engines on any other one (parked, never dropped there: pyo3 refuses); every call
  catches ``BaseException`` (letting ``KeyboardInterrupt``/``SystemExit`` through) and
  rebuilds after a panic.
- With ``RUST_BACKTRACE=1`` in the environment every engine error captures a Rust
  backtrace (~3 ms each, measured); ``RUST_LIB_BACKTRACE=0`` turns that off for library
  errors only, so a policy that errors on every event stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from busted.errors import EvaluationError, PolicyError, PolicyLoadError  # noqa: F401 - their old home

# Must be set before the first engine error is created (Rust reads it once).
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

import regorus  # noqa: E402  (the environment variable above must come first)

log = logging.getLogger(__name__)

_VM_UNDEFINED = '"<undefined>"'  # how the VM (0.13) prints a value it should not have
_LOCATION = re.compile(r"-->\s*(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)")
_REASON = re.compile(r"^error:\s*(?P<reason>.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Problem:
    """One error in one policy source, where the engine (or our loader) found it."""

    file: str
    line: int
    col: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.reason}"


def problem_from(exc: BaseException, file: str, rename: dict[str, str] | None = None) -> Problem:
    """Translate an engine error message into a :class:`Problem`.

    Engine messages look like ``--> file:LINE:COL`` + a source excerpt + ``error: why``.
    ``rename`` maps identifiers we generated back to what the user wrote.
    """
    text = str(exc)
    location = _LOCATION.search(text)
    reason_match = _REASON.search(text)
    reason = reason_match.group("reason").strip() if reason_match else _first_line(text)
    for generated, original in (rename or {}).items():
        reason = reason.replace(generated, original)
    if location:
        line, col = int(location.group("line")), int(location.group("col"))
        return Problem(location.group("file"), line, col, reason)
    return Problem(file, 1, 1, reason)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "unknown engine error"


def _fatal(exc: BaseException) -> bool:
    """Exceptions we must never swallow while catching engine panics (pyo3's
    PanicException is a BaseException): Ctrl-C, exit, and a worker told to stop."""
    return not isinstance(exc, Exception) and type(exc).__name__ != "PanicException"


def parse(name: str, text: str, rego_v0: bool) -> dict[str, Any]:
    """Parse one module in one dialect; return its syntax tree (the ``ast`` object).

    Raises :class:`PolicyLoadError` with the engine's position on a syntax error.
    """
    engine = regorus.Engine()
    try:
        engine.set_rego_v0(rego_v0)
        engine.add_policy(name, text)
        tree = json.loads(engine.get_ast_as_json())
    except BaseException as exc:
        if _fatal(exc):
            raise
        raise PolicyLoadError([problem_from(exc, name)]) from None
    return tree[0]["ast"]


@dataclass(frozen=True)
class Module:
    """A module ready for the engine: its text and the dialect to add it in."""

    name: str
    text: str
    rego_v0: bool


class CompiledPolicy:
    """Modules + data, compiled once, evaluated many times against one input each.

    ``evaluate(input_json)`` returns the value of ``entry`` (a rule path such as
    ``data.busted.__busted_result``) as plain Python (sets become lists), or ``None``
    when it is undefined. Not thread-safe: use it from one thread (it rebuilds its
    engines if that thread changes).
    """

    def __init__(
        self,
        modules: Sequence[Module],
        data: dict[str, Any],
        entry: str,
        *,
        prefer_vm: bool = True,
        rename: dict[str, str] | None = None,
    ) -> None:
        self.modules = tuple(modules)
        self.data = data
        self.entry = entry
        self.rename = rename or {}
        self.prefer_vm = prefer_vm and not any(m.rego_v0 for m in self.modules)
        self._data_json = json.dumps(data)
        self._thread = 0
        self._parked: dict[int, tuple[Any, Any]] = {}  # other threads' engines
        self._engine: Any = None
        self._vm: Any = None
        self.vm_error = ""  # why the VM path is not used, if it is not
        self.vm_fallbacks = 0  # evaluations the VM handed to the interpreter
        self._build()

    # --- construction --------------------------------------------------------------

    def _build(self) -> None:
        self._thread = threading.get_ident()
        self._engine = self._new_engine()
        self._vm = None
        if self.prefer_vm:
            try:
                program = regorus.Program.compile_from_modules(
                    self._data_json, [(m.name, m.text) for m in self.modules], [self.entry]
                )
                vm = regorus.Rvm()
                vm.load_program(program)
                vm.set_data_json(self._data_json)
                self._vm = vm
                self.vm_error = ""
            except BaseException as exc:
                if _fatal(exc):
                    raise
                problem = problem_from(exc, "<vm>", self.rename)
                if problem.file != "<vm>":
                    # Located errors come from the compile pass the VM shares with Rego
                    # itself (unknown function, unsafe variable): the policy is wrong,
                    # and the interpreter would only find out on the event that hits it.
                    raise PolicyLoadError([problem]) from None
                # Unlocated ones are VM gaps ("Missing builtin function: print"): the
                # interpreter runs those policies.
                self.vm_error = str(problem)
                log.debug("policy VM unavailable, using the interpreter: %s", self.vm_error)

    def _new_engine(self) -> Any:
        engine = regorus.Engine()
        try:
            for module in self.modules:
                engine.set_rego_v0(module.rego_v0)
                engine.add_policy(module.name, module.text)
            engine.set_rego_v0(False)
            engine.add_data_json(self._data_json)
        except BaseException as exc:
            if _fatal(exc):
                raise
            first = self.modules[0].name if self.modules else "<policy>"
            raise PolicyLoadError([problem_from(exc, first, self.rename)]) from None
        return engine

    @property
    def uses_vm(self) -> bool:
        return self._vm is not None

    def _ensure_thread(self) -> None:
        thread = threading.get_ident()
        if thread == self._thread:
            return
        # Park this thread's engines rather than dropping them here: pyo3 refuses to
        # drop an engine on a thread other than its own (it leaks it with an error).
        self._parked[self._thread] = (self._engine, self._vm)
        if thread in self._parked:
            self._thread = thread
            self._engine, self._vm = self._parked.pop(thread)
        else:
            self._build()

    # --- evaluation ------------------------------------------------------------------

    def evaluate(self, input_json: str) -> Any:
        """Value of the entry rule for this input (JSON text of the input document)."""
        raw, value = self.evaluate_raw(input_json)
        return orjson.loads(raw) if raw is not None else value

    def evaluate_raw(self, input_json: str) -> tuple[str | None, Any]:
        """(the VM's JSON text, None), or (None, the value) when the interpreter ran.

        The text lets a caller reuse its reading of results it has seen before
        (most events produce one of a few results).
        """
        self._ensure_thread()
        if self._vm is not None:
            try:
                self._vm.set_input_json(input_json)
                raw = self._vm.execute_entry_point(self.entry)
                if _VM_UNDEFINED not in raw:
                    return raw, None
                # An undefined value leaked into the result: the VM got it wrong.
                self.vm_fallbacks += 1
            except BaseException as exc:
                if _fatal(exc):
                    raise
                self.vm_fallbacks += 1
                log.debug("policy VM failed, retrying on the interpreter: %s", exc)
                if _panicked(exc):
                    self._build()  # a VM that panicked may be left mid-run
        return None, self.eval_rule(self.entry, input_json)

    def verify_vm(self, inputs: Sequence[str]) -> bool:
        """Compare the VM with the interpreter on sample inputs; drop the VM if they differ.

        The VM is young (0.13): measured here, it lets undefined values through
        assignments and builtin calls where Rego makes the expression undefined. The
        shipped policies avoid those shapes; for any other policy set this check keeps
        a disagreement from ever reaching a decision.
        """
        if self._vm is None:
            return False
        self._ensure_thread()
        for number, input_json in enumerate(inputs, 1):
            try:
                self._vm.set_input_json(input_json)
                fast = _canonical(json.loads(self._vm.execute_entry_point(self.entry)))
            except BaseException as exc:
                if _fatal(exc):
                    raise
                fast = f"error: {exc}"
            try:
                slow = _canonical(self.eval_rule(self.entry, input_json))
            except EvaluationError as exc:
                slow = f"error: {exc}"
            if fast != slow and not (str(fast).startswith("error") and str(slow).startswith("error")):
                self._vm = None
                self.prefer_vm = False  # and not again when engines are rebuilt
                self.vm_error = f"VM and interpreter disagree on sample input {number}"
                log.warning("policy: %s; using the interpreter (slower)", self.vm_error)
                return False
        return True

    # --- helpers for the test runner and `busted policy eval` ---------------------------

    def eval_rule(self, path: str, input_json: str | None = None) -> Any:
        """Evaluate any rule on the interpreter (``None`` when undefined)."""
        self._ensure_thread()
        try:
            if input_json is not None:
                self._engine.set_input_json(input_json)
            return _plain(self._engine.eval_rule(path))
        except BaseException as exc:
            if _fatal(exc):
                raise
            if _panicked(exc):
                self._engine = self._new_engine()
            raise EvaluationError(_one_line(problem_from(exc, "<input>", self.rename))) from None


def _canonical(value: Any) -> Any:
    """Order-insensitive form: the VM prints sets as arrays, the interpreter as sets."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def _panicked(exc: BaseException) -> bool:
    # pyo3's PanicException is not importable from the module; recognise it by name.
    return type(exc).__name__ == "PanicException"


def _one_line(problem: Problem) -> str:
    if problem.file.startswith("<"):
        return problem.reason
    return str(problem)


def _plain(value: Any) -> Any:
    """Engine values as JSON-shaped Python: sets become sorted lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        items = [_plain(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=json.dumps)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class TestRun:
    """What evaluating one test rule on the interpreter showed."""

    value: Any  # None when undefined
    error: str  # the engine's error, "" if none
    covered: dict[str, set[int]]  # file -> lines evaluated
    prints: list[str]  # output of print() calls in the policy


def run_test(policy: CompiledPolicy, path: str) -> TestRun:
    """Evaluate one ``test_*`` rule with coverage, as ``opa test`` would.

    Tests run on the interpreter: they use ``with`` to replace input and data, and the
    coverage of a failed run tells which expression stopped it.
    """
    policy._ensure_thread()
    engine = policy._engine
    value, error = None, ""
    try:
        engine.set_enable_coverage(True)
        engine.clear_coverage_data()
        engine.set_gather_prints(True)
        value = _plain(engine.eval_rule(path))
    except BaseException as exc:
        if _fatal(exc):
            raise
        error = _one_line(problem_from(exc, "<test>", policy.rename))
        if _panicked(exc):
            policy._engine = policy._new_engine()
            return TestRun(value, error, {}, [])
    try:
        report = json.loads(engine.get_coverage_report_as_json())
        covered = {f["path"]: set(f["covered"]) for f in report.get("files", [])}
        prints = list(engine.take_prints())
    except BaseException as exc:
        if _fatal(exc):
            raise
        covered, prints = {}, []
    finally:
        engine.set_enable_coverage(False)
    return TestRun(value, error, covered, prints)
