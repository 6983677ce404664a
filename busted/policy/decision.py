"""From an event to a decision: the input document, precedence, errors.

The input document is the event with every schema field present
(:func:`busted.schema.complete`), minus the raw ``payload`` bytes (``tls_payload`` is
the same plaintext as text) — or, when the policies name the fields they read, just
those fields (:class:`Projection`), which policies cannot tell apart and the engine
ingests much faster. The compiled policy set returns the values its ``decision`` rules
produced, the ``deny`` / ``audit`` sets and the ``reasons`` set; here they become one
decision with deny > audit > allow, whatever the order of files and rules. Undefined
(no rule matched) is allow. An evaluation error, or a decision value that is none of
the three, never raises: the result carries ``error`` and the configured default.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from busted.policy.engine import CompiledPolicy, EvaluationError
from busted.policy.loader import PolicySet
from busted.schema import DECISIONS, FIELD_DEFAULTS, complete

# Higher wins.
PRECEDENCE = {"allow": 0, "audit": 1, "deny": 2}
_RANKS = PRECEDENCE
_BY_RANK = {rank: name for name, rank in PRECEDENCE.items()}
ERROR_DEFAULTS = ("allow", "deny")
CACHE_ENTRIES = 4096
RESULT_ENTRIES = 1024
CACHE_MAX_DOCUMENT = 1024  # bytes of input JSON; at most ~4 MiB of cache


@dataclass(slots=True)
class Decision:
    """The outcome for one input."""

    decision: str  # allow / audit / deny
    reasons: list[str] = field(default_factory=list)
    error: str = ""  # why the decision is the error default, "" if evaluated cleanly
    values: list[Any] = field(default_factory=list)  # every decision value the rules produced

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reasons": self.reasons,
            "error": self.error,
            "values": sorted({str(v) for v in self.values}),
        }


_ABSENT = object()


def input_document(event: dict[str, Any], fields: Iterable[str] | None = None) -> str:
    """The JSON text policies see as ``input`` for this event.

    ``fields`` (from :attr:`busted.policy.loader.PolicySet.input_fields`) limits the
    document to the fields the policies read (``"http_headers.host"``: that one key of
    the object); each still reads as its schema default when the event lacks it,
    exactly as in the complete document.
    """
    if fields is None:
        doc = complete(event)
        doc.pop("payload", None)
        return orjson.dumps(doc, default=_jsonable).decode()
    return Projection(fields)(event)


class Projection:
    """Builds the input document of the given fields; made once per policy set because
    it runs for every event."""

    def __init__(self, fields: Iterable[str]) -> None:
        whole: list[str] = []
        nested: dict[str, list[str]] = {}
        for name in sorted(fields):
            top, _, key = name.partition(".")
            if key:
                nested.setdefault(top, []).append(key)
            elif top != "payload":  # the raw bytes are never policy input
                whole.append(top)
        self.names = tuple(name for name in whole if name in FIELD_DEFAULTS)
        self.defaults = tuple(FIELD_DEFAULTS[name] for name in self.names)
        self.extra = [name for name in whole if name not in FIELD_DEFAULTS]
        self.nested = [(top, keys, FIELD_DEFAULTS.get(top, _ABSENT)) for top, keys in nested.items()]

    def __call__(self, event: dict[str, Any]) -> str:
        get = event.get
        # zip/map keep the per-field loop in C: this runs for every event.
        doc = dict(zip(self.names, map(get, self.names, self.defaults), strict=True))
        if None in doc.values():  # present but unknown reads as the default too
            for name, default in zip(self.names, self.defaults, strict=True):
                if doc[name] is None:
                    doc[name] = default
        for name in self.extra:  # not schema fields: present only if the event has them
            value = get(name)
            if value is not None:
                doc[name] = value
        for top, keys, default in self.nested:
            value = get(top)
            if isinstance(value, dict):
                doc[top] = {key: value[key] for key in keys if key in value}
            elif value is not None:
                doc[top] = value
            elif default is not _ABSENT:
                doc[top] = default
        return orjson.dumps(doc, default=_jsonable).decode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)



def combine(result: Any, on_error: str = "allow") -> Decision:
    """Turn the policy set's result document into a :class:`Decision`.

    Runs once per event, so the common case (known values, a reason or two) takes a
    short path: no sets, sorting or generators unless there is something to merge.
    """
    if type(result) is not dict:
        return Decision("allow")  # nothing defined at all
    values = result.get("decisions")
    deny = result.get("deny")
    audit = result.get("audit")
    listed = result.get("reasons")
    best = -1
    unknown = None
    if values:
        if type(values) is not list:
            values = _as_list(values)
        for value in values:
            rank = _RANKS.get(value) if type(value) is str else None
            if rank is None:
                if value is not None:
                    unknown = [*(unknown or []), value]
            elif rank > best:
                best = rank
    else:
        values = []
    # deny / audit sets (or booleans) decide as their name says; members are reasons.
    if deny is True or (deny and deny is not False):
        best = 2
        values = [*values, "deny"]
    if audit is True or (audit and audit is not False):
        best = max(best, 1)
        values = [*values, "audit"]
    if listed or deny or audit:
        reasons = [
            r if type(r) is str else _reason_text(r)
            for found in (listed, deny, audit) if found
            for r in _as_list(found)
        ]
        if len(reasons) > 1:
            reasons = sorted(set(reasons))
    else:
        reasons = []
    error = ""
    if unknown:
        shown = ", ".join(sorted(json.dumps(v) for v in unknown))
        error = f"decision has unexpected value(s) {shown}; expected one of {', '.join(DECISIONS)}"
    decision = _BY_RANK[best] if best >= 0 else (on_error if unknown else "allow")
    return Decision(decision, reasons, error, values)


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):  # `deny if ...` gives no reason
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _reason_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class Decider:
    """Evaluates inputs against one compiled policy set; never raises for an input."""

    def __init__(
        self,
        policy: CompiledPolicy,
        on_error: str = "allow",
        input_fields: frozenset[str] | None = None,
        cache: bool = False,
    ) -> None:
        if on_error not in ERROR_DEFAULTS:
            raise ValueError(f"on_error must be one of {ERROR_DEFAULTS}, not {on_error!r}")
        self.policy = policy
        self.on_error = on_error
        self.input_fields = None if input_fields is None else tuple(sorted(input_fields))
        # Equal inputs get equal decisions from a deterministic policy set, and many
        # events share their policy-relevant fields (connections and DNS to one host,
        # no payload). Only short documents are kept: one with a payload rarely repeats.
        self.cache: dict[str, Decision] | None = {} if cache else None
        self.cache_hits = 0
        self._results: dict[str, Decision] = {}
        self._document = (
            input_document if input_fields is None else Projection(input_fields)
        )

    def decide_json(self, input_json: str) -> Decision:
        try:
            raw, result = self.policy.evaluate_raw(input_json)
        except EvaluationError as exc:
            return Decision(self.on_error, [], str(exc))
        if raw is None:
            return combine(result, self.on_error)
        # Few distinct results come back (nothing matched, "audit: Anthropic", ...):
        # read each once.
        known = self._results
        decision = known.get(raw)
        if decision is None:
            decision = combine(orjson.loads(raw), self.on_error)
            if len(known) >= RESULT_ENTRIES:
                known.clear()
            known[raw] = decision
        return decision

    def decide(self, event: dict[str, Any]) -> Decision:
        try:
            document = self._document(event)
        except (TypeError, ValueError) as exc:  # an event our encoder cannot represent
            return Decision(self.on_error, [], f"input not representable as JSON: {exc}")
        cache = self.cache
        if cache is None or len(document) > CACHE_MAX_DOCUMENT:
            return self.decide_json(document)
        decision = cache.get(document)
        if decision is not None:
            self.cache_hits += 1
            return decision
        decision = self.decide_json(document)
        if not decision.error:
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()  # crude, but bounded and cheap; it refills with what repeats
            cache[document] = decision
        return decision


def build_decider(policy_set: PolicySet, on_error: str = "allow", *, prefer_vm: bool = True) -> Decider:
    """Compile a policy set in the calling thread and check its VM on the sample events."""
    from busted.policy.samples import shipped_events

    policy = policy_set.compile(prefer_vm=prefer_vm)
    decider = Decider(policy, on_error, policy_set.input_fields, cache=policy_set.deterministic)
    if policy.uses_vm:
        policy.verify_vm([input_document(e, decider.input_fields) for e in shipped_events()])
    return decider
