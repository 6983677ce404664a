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
"""

from __future__ import annotations

import logging

from busted.config import MonitorConfig
from busted.workers.stage import Event, Stage

log = logging.getLogger("busted.policy")

_EVALUATED_CLASSES = ("LLM_", "MCP_")
# What a frame of an LLM/MCP event always contains (content_class values are plain
# msgpack strings), so batches without any can be forwarded undecoded in "llm" scope.
_FRAME_MARKERS = (b"LLM_", b"MCP_")


class PolicyStage(Stage):
    role = "policy"

    def __init__(self, config: MonitorConfig) -> None:
        super().__init__(config)
        self.passthrough = not (config.policy_dirs or config.rules)
        self.llm_only = config.policy_scope == "llm"
        self.live = None
        if not self.passthrough:
            self.live = self._load()

    def _load(self):
        # Imported here so a monitor without policies never loads the engine.
        from busted.policy.reload import LivePolicy

        live = LivePolicy(self.config.policy_dirs, self.config.rules, self.config.policy_error)
        log.info("policy: %s, scope %s, errors decide %s", live.describe(),
                 self.config.policy_scope, self.config.policy_error)
        return live

    def wants(self, frame: bytes) -> bool:
        if not self.llm_only:
            return True
        return any(marker in frame for marker in _FRAME_MARKERS)

    def process(self, events: list[Event]) -> list[Event]:
        live = self.live
        if live is None:
            return events
        decide = live.decider.decide
        llm_only = self.llm_only
        counts = {"allow": 0, "audit": 0, "deny": 0}
        errors = 0
        for event in events:
            if llm_only and not (event.get("content_class") or "").startswith(_EVALUATED_CLASSES):
                continue
            decision = decide(event)
            event["policy"] = outcome = decision.decision
            counts[outcome] += 1
            if decision.reasons:  # a copy: decisions are shared through the cache
                event["policy_reasons"] = list(decision.reasons)
            if decision.error:
                event["policy_error"] = decision.error
                errors += 1
        # Counted per batch, not per event: Counter updates are not free at 20k/s.
        stats = self.stats
        for outcome, n in counts.items():
            if n:
                stats[outcome] += n
        stats["evaluations"] += sum(counts.values())
        if errors:
            stats["policy_errors"] += errors
        return events

    def tick(self, now: float) -> list[Event]:
        live = self.live
        if live is not None and live.poll(now):
            self.stats["reloads"] = live.reloads
        if live is not None:
            self.stats["reload_errors"] = live.reload_errors
            self.stats["vm_fallbacks"] = live.decider.policy.vm_fallbacks
            self.stats["cache_hits"] = live.decider.cache_hits
        return []


STAGE = PolicyStage
