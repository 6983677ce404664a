"""The policy worker's role logic (a :class:`busted.workers.stage.Stage`).

Pull socket: ``pipe/policy.sock`` (bound); pushes to the next stage's socket (output).

Every event (or, with ``--policy-scope llm``, every event whose ``content_class``
starts with ``LLM_`` or ``MCP_``) is judged by the Rego policies of ``--policy-dir``
and ``--rule``: the stage sets ``policy`` (allow / audit / deny), ``policy_reasons``
when the policies gave reasons, and ``policy_error`` when evaluation failed (the
decision is then ``--policy-error``'s default). Without policy sources the stage is a
passthrough and the loop forwards frames without decoding them.

The engines are built in this worker's own thread (regorus requires it); ``tick``
reloads the policies when their files change. A broken policy at start-up raises
:class:`busted.errors.PolicyError` with file:line:col; a broken edit later keeps the
previous policy and logs the error.

Under ``--enforce`` the stage also answers capture (see :mod:`busted.enforce.enforcer`):
every held event gets ``{"cmd": "release"}`` or, when denied, ``{"cmd": "kill"}``; a denied
event that was not held gets ``kill`` too, unless classify answered already (the short
path, :mod:`busted.workers.held_judge`: the event comes ``answered`` with its decision,
which stands) (its process is killed after the fact). Only
what a process sends is acted on: a denied read (an answer received, or a server
reading a request) says ``action: none-received``, a server's denied answer
``none-server-side``. The
policies' ``block_destinations`` set (:mod:`busted.enforce.destinations`) is evaluated at
load and reload, its host names resolved off the event path, and sent as ``{"cmd":
"block"}``, again every few seconds so a restarted capture worker gets it back.
"""

from __future__ import annotations

import logging
import os

from busted import messages
from busted.config import MonitorConfig
from busted.schema import ENFORCEMENT_CONTEXT
from busted.workers.held_judge import ANSWERED
from busted.workers.stage import Event, Stage

log = logging.getLogger("busted.policy")

_EVALUATED_CLASSES = ("LLM_", "MCP_")
BLOCKS_RULE = "data.busted.block_destinations"
BLOCKS_RESEND_S = 5.0
# What a frame of an LLM/MCP event always contains (content_class values are plain
# msgpack strings), so batches without any can be forwarded undecoded in "llm" scope.
_FRAME_MARKERS = (b"LLM_", b"MCP_")
_HELD_MARKER = b"\xa4held\xc3"  # msgpack of the key "held" followed by true


class PolicyStage(Stage):
    role = "policy"

    def __init__(self, config: MonitorConfig) -> None:
        super().__init__(config)
        self.passthrough = not (config.policy_dirs or config.rules)
        self.llm_only = config.policy_scope == "llm"
        self.live = None
        self.enforce = bool(config.enforce)
        self.action = "would-kill" if config.dry_run else "kill"
        self._blocks: list[dict] | None = None  # resolved block_destinations
        self._resolving = None  # Future of a resolution in progress
        self._pool = None
        self._next_blocks_send = 0.0
        if not self.passthrough:
            self.live = self._load()

    def _load(self):
        # Imported here so a monitor without policies never loads the engine.
        from busted.policy.reload import LivePolicy

        live = LivePolicy(self.config.policy_dirs, self.config.rules, self.config.policy_error,
                          strict_perms=os.geteuid() == 0 and not self.config.insecure_policy_perms)
        log.info("policy: %s, scope %s, errors decide %s", live.describe(),
                 self.config.policy_scope, self.config.policy_error)
        return live

    def wants(self, frame: bytes) -> bool:
        if not self.llm_only:
            return True
        if self.enforce and _HELD_MARKER in frame:
            return True  # a held writer waits for an answer, LLM or not
        return any(marker in frame for marker in _FRAME_MARKERS)

    def process(self, events: list[Event]) -> list[Event]:
        live = self.live
        if live is None:
            return events
        decide = live.decider.decide
        llm_only = self.llm_only
        counts = {"allow": 0, "audit": 0, "deny": 0}
        errors = 0
        enforce = self.enforce
        provisional = 0
        for event in events:
            if event.get("provisional"):
                provisional += 1
            if ANSWERED in event:
                # Judged and answered by classify (the short path): that decision stands.
                del event[ANSWERED]
                if (outcome := event.get("policy")) in counts:
                    counts[outcome] += 1
                continue
            if llm_only and not (event.get("content_class") or "").startswith(_EVALUATED_CLASSES):
                if enforce and event.get("held"):
                    self._answer(event, "allow")
                continue
            if event.get("event_type") == "ENFORCEMENT":
                continue  # capture's own record of an action: already decided
            decision = decide(event)
            event["policy"] = outcome = decision.decision
            counts[outcome] += 1
            if decision.reasons:  # a copy: decisions are shared through the cache
                event["policy_reasons"] = list(decision.reasons)
            if decision.error:
                event["policy_error"] = decision.error
                errors += 1
            if enforce and (outcome == "deny" or event.get("held")):
                self._answer(event, outcome)
        # Counted per batch, not per event: Counter updates are not free at 20k/s.
        stats = self.stats
        for outcome, n in counts.items():
            if n:
                stats[outcome] += n
        stats["evaluations"] += sum(counts.values())
        if errors:
            stats["policy_errors"] += errors
        if provisional:
            # A piece of a request judged before its end (see the classify stage): it is
            # answered now; only a denied one is worth reporting (the whole request
            # follows as its own event otherwise).
            events = [e for e in events if not e.get("provisional") or e.get("policy") == "deny"]
        return events

    def _answer(self, event: Event, outcome: str) -> None:
        """Tell capture what to do with the writer of this event."""
        action = (_passive(event) or self.action) if outcome == "deny" else ""
        if action:
            event["action"] = action
        if action != self.action:  # allowed, or not the sender's doing
            if event.get("held"):
                self.feedback(messages.release(event))
            return
        context = {k: event[k] for k in ENFORCEMENT_CONTEXT if event.get(k)}
        self.feedback(messages.kill(event, context))

    # --- block_destinations ------------------------------------------------------------

    def _start_blocks(self) -> None:
        """Evaluate the block list now; resolve its names in a helper thread."""
        from concurrent.futures import ThreadPoolExecutor

        from busted.enforce.destinations import DestinationError, parse

        raw = None
        if BLOCKS_RULE.rsplit(".", 1)[1] in self.live.policy_set.rules():
            try:
                raw = self.live.decider.policy.eval_rule(BLOCKS_RULE)
            except Exception as exc:  # noqa: BLE001 - e.g. a rule that reads input
                log.error("block_destinations could not be evaluated without an event: %s", exc)
        entries = []
        for item in raw or ():
            try:
                entries.append(parse(item))
            except DestinationError as exc:
                log.error("block_destinations: %s (entry ignored)", exc)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="resolve")
        self._resolving = self._pool.submit(_resolve_all, entries)

    def _blocks_tick(self, now: float) -> None:
        if self._resolving is not None and self._resolving.done():
            try:
                self._blocks = self._resolving.result()
            except Exception as exc:  # noqa: BLE001 - resolution never stops the stage
                log.error("block_destinations: resolving failed: %s", exc)
                self._blocks = []
            self._resolving = None
            self._next_blocks_send = 0.0
            self.stats["blocked_destinations"] = len(self._blocks)
        if self._blocks is not None and now >= self._next_blocks_send:
            self._next_blocks_send = now + BLOCKS_RESEND_S
            self.feedback(messages.block(self._blocks))

    def tick(self, now: float) -> list[Event]:
        live = self.live
        reloaded = live is not None and live.poll(now)
        if self.enforce and live is not None:
            if reloaded or (self._blocks is None and self._resolving is None):
                self._start_blocks()
            self._blocks_tick(now)
        if reloaded:
            self.stats["reloads"] = live.reloads
        if live is not None:
            self.stats["reload_errors"] = live.reload_errors
            self.stats["vm_fallbacks"] = live.decider.policy.vm_fallbacks
            self.stats["cache_hits"] = live.decider.cache_hits
        return []


def _passive(event: Event) -> str:
    """Why a deny is not acted on ("" when it is): enforcement stops what a process
    SENDS. Bytes it received have arrived (and a server reading a denied request did not
    make it); a server writing an answer is not the one that asked."""
    if event.get("direction") == "read":
        return "none-received"
    if (event.get("content_class") or "").endswith("_RESPONSE"):
        return "none-server-side"
    return ""


def _resolve_all(entries) -> list[dict]:
    from busted.enforce.destinations import resolve

    return [d.as_dict(resolve(d.host) if d.host else None) for d in entries]


STAGE = PolicyStage
