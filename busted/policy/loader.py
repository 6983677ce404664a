"""Policy sources -> a :class:`PolicySet` ready to compile.

Sources are every ``*.rego`` file of each policy directory (``_test.rego`` files only
when tests are wanted), the directory's ``data.json`` (merged at the root of ``data``),
and inline ``--rule`` strings (named ``rule#1``, ``rule#2``, ...).

Each source is read in the dialect it is written in. Rego v1 is tried first; a file
that is not valid v1 is read as v0 (the seed README's ``decision = "deny" { ... }``),
unless the v0 reading only "works" by treating a v1 keyword as a rule name — the engine
does that with just a warning and then evaluates nonsense, so we report the v1 error.

Why the loader rewrites ``decision``: several complete rules giving ``decision``
different values — in one file as in the seed README, or across files — are a conflict
error in Rego. We want deny > audit > allow instead. So each complete ``decision``
rule (and ``default decision``) of package ``busted`` is renamed to a unique generated
name of the same length (so every line:column the engine reports stays true), and a
generated module collects their values, together with the ``deny`` / ``audit`` sets
(the other, cheaper way to decide: their members are the reasons), and defines
``decision`` from them by precedence. ``data.busted.decision`` therefore still means
"the decision" inside policies and tests; :data:`ENTRY` returns the values, the sets
and ``reasons`` in one evaluation, and :mod:`busted.policy.decision` applies the same
precedence to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busted.policy.engine import CompiledPolicy, Module, PolicyLoadError, Problem, parse

PACKAGE = "busted"
DECISION = "decision"
DATA_FILE = "data.json"
TEST_SUFFIX = "_test.rego"
ENTRY = "data.busted.__busted_result"
_GENERATED_NAME = "<busted-precedence>"
# Rule names that only a v1 file has; as rule *heads* in a v0 reading they betray a
# v1 file read wrongly (the engine merely warns).
_V1_KEYWORDS = frozenset({"if", "contains", "in", "every"})


@dataclass(frozen=True)
class PolicyText:
    """One policy source: a file's path (as given) or ``rule#N``, and its text."""

    name: str
    text: str


@dataclass(frozen=True)
class TestRule:
    """A ``test_*`` rule and where its body's expressions are (for --verbose)."""

    package: str
    name: str
    file: str
    line: int
    statements: tuple[tuple[int, str], ...]  # (line, source text) of each body expression

    @property
    def path(self) -> str:
        return f"data.{self.package}.{self.name}"


@dataclass(frozen=True)
class LoadedModule:
    module: Module  # rewritten text + dialect
    package: str
    decision_rules: tuple[str, ...]  # generated names of its decision rules
    tests: tuple[TestRule, ...]
    rules: tuple[str, ...]  # names of its non-function rules (for `policy eval`)
    input_fields: frozenset[str] | None  # input.X it reads; None = the whole input
    deterministic: bool = True  # calls no builtin whose result can change (time, rand, http)
    other_kinds: frozenset[str] = frozenset()  # names with a definition that is not a set


@dataclass(frozen=True)
class PolicySet:
    """Everything that was loaded, picklable, not yet compiled (engines are per thread)."""

    modules: tuple[LoadedModule, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # every file read, data.json included

    @property
    def tests(self) -> list[TestRule]:
        return [t for m in self.modules for t in m.tests]

    @property
    def input_fields(self) -> frozenset[str] | None:
        """The input fields any policy can observe (None: some policy reads all of input).

        Building and parsing an input document costs ~0.5 µs per field in the engine
        (measured), so the decider sends only these; a policy cannot tell the difference.
        """
        fields: set[str] = set()
        for m in self.modules:
            if m.input_fields is None:
                return None
            fields |= m.input_fields
        return frozenset(fields)

    @property
    def deterministic(self) -> bool:
        """Same input, same result: then a decision may be reused for an equal input."""
        return all(m.deterministic for m in self.modules)

    def rules(self, package: str = PACKAGE) -> list[str]:
        """Rule names of a package, generated ones left out, in a stable order."""
        names = {r for m in self.modules if m.package == package for r in m.rules}
        if package == PACKAGE:
            names.add(DECISION)  # the generated precedence rule always defines it
        return sorted(n for n in names if not n.startswith("__"))

    @property
    def rename(self) -> dict[str, str]:
        return {name: DECISION for m in self.modules for name in m.decision_rules}

    def dialects(self) -> dict[str, str]:
        """Module name -> "v0" or "v1"."""
        return {m.module.name: ("v0" if m.module.rego_v0 else "v1") for m in self.modules}

    def compile(self, *, prefer_vm: bool = True) -> CompiledPolicy:
        """Build the engines (in the calling thread). Raises PolicyLoadError."""
        modules = [m.module for m in self.modules]
        modules.append(Module(_GENERATED_NAME, _precedence_module(self), rego_v0=False))
        return CompiledPolicy(modules, self.data, ENTRY, prefer_vm=prefer_vm, rename=self.rename)


_RESULT_SETS = ("reasons", "deny", "audit")


def _precedence_module(policy_set: PolicySet) -> str:
    """The generated module: every decision value in one set, precedence, the result.

    Two ways to decide, both honoured: ``decision := "deny" if ...`` rules (renamed,
    collected here) with an optional ``reasons`` set, and ``deny contains "why" if ...``
    / ``audit contains "why" if ...`` sets whose members are the reasons. The second
    costs one rule per condition instead of two, which the engine's per-rule cost makes
    worth having (the shipped policies use it).

    The result names only what the loaded policies define: each rule the engine
    evaluates costs a few thousand instructions per event, defaults included, and a
    partial set (``deny contains ...``) is never undefined, so it needs no default.
    """
    names = [n for m in policy_set.modules for n in m.decision_rules]
    ours = [m for m in policy_set.modules if m.package == PACKAGE]
    defined = {r for m in ours for r in m.rules}
    not_sets = {r for m in ours for r in m.other_kinds}
    lines = [f"package {PACKAGE}", "", "import rego.v1", ""]
    parts = []
    if names:
        # "d != null" is not decoration: the VM lets an undefined value through an
        # assignment (measured with 0.13); the comparison makes the body fail as it should.
        lines += [f"__busted_values contains d if {{ d := {n}; d != null }}" for n in names]
        lines.append("")
        parts.append(("decisions", "__busted_values"))
    else:
        lines += ["__busted_values := set()", ""]
    refs = {}
    for name in _RESULT_SETS:
        if name not in defined:
            refs[name] = "[]"
            continue
        if name in not_sets:  # e.g. `deny if ...`: undefined when false
            lines += [f"default __busted_{name} := []", "", f"__busted_{name} := {name}", ""]
            refs[name] = f"__busted_{name}"
        else:
            refs[name] = name
        parts.append((name, refs[name]))
    lines += [
        # For Rego readers of `decision` (policies, tests). The worker does not evaluate
        # it: Python applies the same precedence to __busted_result.
        "__busted_decisions contains d if some d in __busted_values",
        f'__busted_decisions contains "deny" if __busted_any({refs["deny"]})',
        f'__busted_decisions contains "audit" if __busted_any({refs["audit"]})',
        "",
        # No rule matched means allow, inside Rego (tests) as in the event.
        'default decision := "allow"',
        "",
        'decision := "deny" if "deny" in __busted_decisions',
        'else := "audit" if "audit" in __busted_decisions',
        "",
        "__busted_any(v) if v == true",
        "",
        "__busted_any(v) if {",
        "\tnot is_boolean(v)",
        "\tcount(v) > 0",
        "}",
        "",
        "__busted_result := {",
        *[f'\t"{key}": {ref},' for key, ref in parts],
        "}",
        "",
    ]
    return "\n".join(lines)


# --- reading sources -------------------------------------------------------------------


def dir_files(directory: Path, *, include_tests: bool) -> list[Path]:
    """The policy files of one directory, in a stable order (not recursive)."""
    files = sorted(p for p in directory.glob("*.rego") if p.is_file())
    if not include_tests:
        files = [p for p in files if not p.name.endswith(TEST_SUFFIX)]
    return files


def watched_files(directories: Iterable[Path]) -> list[Path]:
    """Every file whose change means a reload: policies and data.json."""
    out: list[Path] = []
    for directory in directories:
        out += dir_files(Path(directory), include_tests=False)
        data = Path(directory) / DATA_FILE
        if data.is_file():
            out.append(data)
    return out


def load(
    dirs: Sequence[Path | str] = (),
    rules: Sequence[str] = (),
    files: Sequence[Path | str] = (),
    *,
    include_tests: bool = False,
) -> PolicySet:
    """Read and parse every source; raise :class:`PolicyLoadError` listing every problem."""
    problems: list[Problem] = []
    sources: list[PolicyText] = []
    data: dict[str, Any] = {}
    read: list[str] = []
    for raw in dirs:
        directory = Path(raw)
        if not directory.is_dir():
            problems.append(Problem(str(directory), 0, 0, "not a directory"))
            continue
        for path in dir_files(directory, include_tests=include_tests):
            sources.append(_read_source(path, problems))
            read.append(str(path))
        data_path = directory / DATA_FILE
        if data_path.is_file():
            read.append(str(data_path))
            _merge_data_file(data, data_path, problems)
    for raw in files:
        path = Path(raw)
        if path.name == DATA_FILE:
            read.append(str(path))
            _merge_data_file(data, path, problems)
        else:
            sources.append(_read_source(path, problems))
            read.append(str(path))
    sources += [PolicyText(f"rule#{i}", text) for i, text in enumerate(rules, 1)]
    modules = load_sources([s for s in sources if s.name], problems)
    if problems:
        raise PolicyLoadError(problems)
    return PolicySet(tuple(modules), data, tuple(read))


def _read_source(path: Path, problems: list[Problem]) -> PolicyText:
    try:
        return PolicyText(str(path), path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(path), 0, 0, f"cannot read: {exc}"))
        return PolicyText("", "")


def _merge_data_file(data: dict[str, Any], path: Path, problems: list[Problem]) -> None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problems.append(Problem(str(path), exc.lineno, exc.colno, f"invalid JSON: {exc.msg}"))
        return
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(path), 0, 0, f"cannot read: {exc}"))
        return
    if not isinstance(doc, dict):
        problems.append(Problem(str(path), 1, 1, "data.json must hold a JSON object"))
        return
    clash = _merge(data, doc)
    if clash:
        problems.append(Problem(str(path), 1, 1, f"data key {clash} is already set by another data.json"))


def _merge(into: dict[str, Any], doc: dict[str, Any], prefix: str = "") -> str:
    """Deep-merge ``doc`` into ``into``; return the first clashing key path, or ""."""
    for key, value in doc.items():
        if key in into:
            if isinstance(into[key], dict) and isinstance(value, dict):
                clash = _merge(into[key], value, f"{prefix}{key}.")
                if clash:
                    return clash
            elif into[key] != value:
                return f"{prefix}{key}"
        else:
            into[key] = value
    return ""


def load_sources(sources: Sequence[PolicyText], problems: list[Problem]) -> list[LoadedModule]:
    """Parse and rewrite each source, appending what is wrong to ``problems``."""
    modules: list[LoadedModule] = []
    counter = [0]
    for source in sources:
        try:
            modules.append(_prepare(source, counter))
        except PolicyLoadError as exc:
            problems.extend(exc.problems)
    return modules


# --- one source ----------------------------------------------------------------------


def _prepare(source: PolicyText, counter: list[int]) -> LoadedModule:
    ast, rego_v0 = _parse_either(source)
    package = _ref_path(ast["package"]["refr"])
    text = source.text
    decision_names: list[str] = []
    if package == PACKAGE:
        text, decision_names = _rename_decisions(source, ast, counter)
    tests = tuple(_tests(source, ast, package))
    rules = tuple(sorted({
        name for rule in ast["rules"]
        if (name := _head_name(rule)) and _head_kind(rule) != "Func"
    } | ({DECISION} if decision_names else set())))
    return LoadedModule(
        Module(source.name, text, rego_v0), package, tuple(decision_names), tests, rules,
        _input_fields(ast), not _calls_any(ast, _NONDETERMINISTIC),
        frozenset(
            name for rule in ast["rules"]
            if (name := _head_name(rule)) and _head_kind(rule) != "Set"
        ),
    )


# Builtins whose result is not a function of input and data alone.
_NONDETERMINISTIC = ("time.now_ns", "rand.", "uuid.", "http.send", "net.lookup_ip_addr",
                     "opa.runtime", "io.jwt.decode_verify", "print", "trace")


def _calls_any(ast: dict[str, Any], prefixes: tuple[str, ...]) -> bool:
    found = False

    def visit(node: Any) -> None:
        nonlocal found
        if found:
            return
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            call = node.get("Call")
            if isinstance(call, dict):
                name = _ref_path(call.get("fcn", {}))
                if any(name == p or (p.endswith(".") and name.startswith(p)) for p in prefixes):
                    found = True
                    return
            for value in node.values():
                visit(value)

    visit(ast.get("rules", []))
    return found


def _input_fields(ast: dict[str, Any]) -> frozenset[str] | None:
    """Input fields the module reads, or None if it reads ``input`` whole.

    ``input.x`` / ``input["x"]`` name field ``x``; ``input.x.y`` names ``x.y``, one key of
    an object field such as ``http_headers`` (so one header is sent, not all). Any other
    use of ``input`` (iterating it, passing it to a function, ``input[k]``, an import)
    may observe every field.
    """
    fields: set[str] = set()
    whole = False

    def visit(node: Any) -> None:
        nonlocal whole
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        key, parent = _ref_step(node)
        if parent is not None:
            top = _input_field(parent)
            if top is not None and key is not None:
                fields.add(f"{top}.{key}")
                _visit_index(node, visit)
                return
            top = _input_field(node)
            if top is not None:
                fields.add(top)
                _visit_index(node, visit)
                return
            if _is_input(parent):  # input[expr]: any field
                whole = True
                return
        if _is_input(node):
            whole = True
            return
        for value in node.values():
            visit(value)

    visit(ast.get("imports", []))
    visit(ast.get("rules", []))
    if whole:
        return None
    tops = {f for f in fields if "." not in f}
    return frozenset(f for f in fields if f.split(".", 1)[0] not in tops or "." not in f)


def _ref_step(node: dict[str, Any]) -> tuple[str | None, Any]:
    """(literal key, the reference it applies to) for ``a.key`` / ``a["key"]`` nodes;
    (None, a) for ``a[expr]``; (None, None) for anything else."""
    dot = node.get("RefDot")
    if isinstance(dot, dict):
        return dot["field"][1], dot.get("refr")
    brack = node.get("RefBrack")
    if isinstance(brack, dict):
        index = brack.get("index")
        if isinstance(index, dict) and "String" in index:
            return index["String"]["value"], brack.get("refr")
        return None, brack.get("refr")
    return None, None


def _input_field(node: Any) -> str | None:
    """``x`` when the node is ``input.x`` (or ``input["x"]``), else None."""
    if not isinstance(node, dict):
        return None
    key, parent = _ref_step(node)
    return key if key is not None and _is_input(parent) else None


def _visit_index(node: dict[str, Any], visit) -> None:
    # input.x[expr]: the index expression may itself read input.
    brack = node.get("RefBrack")
    if isinstance(brack, dict):
        visit(brack.get("index"))


def _is_input(node: Any) -> bool:
    var = node.get("Var") if isinstance(node, dict) else None
    return isinstance(var, dict) and var.get("value") == "input"


def _parse_either(source: PolicyText) -> tuple[dict[str, Any], bool]:
    """(syntax tree, is v0). Raises the error of the dialect the file is more likely in."""
    try:
        return parse(source.name, source.text, rego_v0=False), False
    except PolicyLoadError as v1_error:
        try:
            ast = parse(source.name, source.text, rego_v0=True)
        except PolicyLoadError as v0_error:
            # The reading that got further into the file is the one the author meant; on
            # a tie, v1 asking for its keywords means the file is written in v0.
            p1, p0 = v1_error.problems[0], v0_error.problems[0]
            further = (p0.line, p0.col) > (p1.line, p1.col)
            tie_v0 = (p0.line, p0.col) == (p1.line, p1.col) and "keyword is required" in p1.reason
            raise (v0_error if further or tie_v0 else v1_error) from None
        if any(_head_name(rule) in _V1_KEYWORDS for rule in ast["rules"]):
            raise v1_error from None
        return ast, True


def _head_name(rule: dict[str, Any]) -> str:
    var = _head_var(rule)
    return var["value"] if var else ""


def _head_var(rule: dict[str, Any]) -> dict[str, Any] | None:
    """The Var node naming a rule (None for ref heads like ``a.b := 1``)."""
    if "Default" in rule:
        refr = rule["Default"]["refr"]
    elif "Spec" in rule:
        head = rule["Spec"]["head"]
        kind = next(iter(head))
        refr = head[kind].get("refr")
    else:
        return None
    return refr.get("Var") if isinstance(refr, dict) else None


def _head_kind(rule: dict[str, Any]) -> str:
    if "Default" in rule:
        return "Default"
    return next(iter(rule["Spec"]["head"]))


def _ref_path(node: dict[str, Any]) -> str:
    if "Var" in node:
        return node["Var"]["value"]
    if "RefDot" in node:
        return f"{_ref_path(node['RefDot']['refr'])}.{node['RefDot']['field'][1]}"
    return json.dumps(node)[:40]


def _rename_decisions(source: PolicyText, ast: dict[str, Any], counter: list[int]) -> tuple[str, list[str]]:
    raw = bytearray(source.text.encode("utf-8"))
    names: list[str] = []
    for rule in ast["rules"]:
        var = _head_var(rule)
        if not var or var["value"] != DECISION:
            continue
        span = var["span"]
        if _head_kind(rule) not in ("Default", "Compr"):
            raise PolicyLoadError([Problem(
                source.name, span["line"], span["col"],
                'decision must be a complete rule, e.g. decision := "deny" if { ... }',
            )])
        # Same length as "decision": every position the engine reports stays right.
        name = f"__d{counter[0]:05d}"
        counter[0] += 1
        start, end = span["start"], span["end"]
        if bytes(raw[start:end]) != DECISION.encode():
            raise PolicyLoadError([Problem(
                source.name, span["line"], span["col"], "cannot locate the decision rule head"
            )])
        raw[start:end] = name.encode()
        names.append(name)
    return raw.decode("utf-8"), names


def _tests(source: PolicyText, ast: dict[str, Any], package: str) -> list[TestRule]:
    raw = source.text.encode("utf-8")
    tests: dict[str, TestRule] = {}
    for rule in ast["rules"]:
        if "Spec" not in rule:
            continue
        name = _head_name(rule)
        if not name.startswith("test_") or name in tests or _head_kind(rule) == "Func":
            continue
        statements: list[tuple[int, str]] = []
        bodies = rule["Spec"].get("bodies") or []
        if bodies:
            for stmt in bodies[0]["query"]["stmts"]:
                span = stmt["span"]
                text = raw[span["start"]:span["end"]].decode("utf-8", "replace")
                statements.append((span["line"], " ".join(text.split())))
        tests[name] = TestRule(package, name, source.name, rule["Spec"]["span"]["line"], tuple(statements))
    return list(tests.values())
