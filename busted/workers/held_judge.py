"""The short path of a held write (``--enforce``): the classify worker judges it itself.

A held write's process is stopped until capture hears a verdict. Through the whole
pipeline that answer takes four process hops (capture -> classify -> identity -> policy
-> capture), each waking three threads (bench/README.md, Enforcement). Classify is the
stage that completes the request, so it also identifies and judges it here, with its
own :class:`~busted.workers.identity_worker.IdentityStage` and
:class:`~busted.workers.policy_worker.PolicyStage`, and answers capture at once: two
hops instead of four.

What is reported downstream stays the same: the event goes on through identity and
policy as before, carrying the policy fields decided here and ``answered`` (which the
policy stage removes: it keeps this decision, the one acted on, and does not answer
again). The identity stage computes the same identity fields again (a request's
identity depends only on its own fields) and keeps its per-connection memory.

Only what gives the same answer as the full path takes the short path: requests and
non-conversation traffic. A held response (a server's answer, which inherits the
identity of the request before it) and every held write when pods are resolved (the
identity worker alone talks to the cluster's API) take the full path, as do events
whose judging raised here: the policy stage answers those. Crash isolation is as
before: if classify dies, capture's hold deadline and the watchdog apply the fail mode.
"""

from __future__ import annotations

import logging

from busted.config import MonitorConfig
from busted.kube import kubernetes_wanted
from busted.workers.stage import Event

log = logging.getLogger("busted.classify")

ANSWERED = "answered"  # set on a held event judged and answered here; policy pops it


def short_path_wanted(config: MonitorConfig) -> bool:
    """Held writes exist, there is a policy to judge them, and no pod lookups."""
    return bool(config.enforce and not config.dry_run and (config.policy_dirs or config.rules)
                and not (config.kubernetes and kubernetes_wanted(config.kubeconfig or None)))


class HeldJudge:
    """Identify, judge and answer one held event inside the classify worker."""

    def __init__(self, config: MonitorConfig, stats, feedback) -> None:
        # Imported here: a classify worker without --enforce never loads the engine.
        from busted.workers.identity_worker import IdentityStage
        from busted.workers.policy_worker import PolicyStage

        self.stats = stats
        self.identity = IdentityStage(config)
        self.policy = PolicyStage(config)
        self.policy.feedback = feedback

    def answer(self, event: Event) -> bool:
        """Judge a held event and answer capture. Returns False when the event must not
        be forwarded (an allowed provisional piece); an event this cannot judge the same
        way as the full path is left untouched for the policy stage to answer."""
        if str(event.get("content_class") or "").endswith("_RESPONSE"):
            return True
        try:
            self.identity.process([event])
            kept = self.policy.process([event])
        except Exception as exc:  # noqa: BLE001 - the policy stage answers instead
            self.stats["held_judge_errors"] += 1
            log.warning("held write %s not judged in classify (%r): the policy stage will",
                        event.get("hold_id"), exc)
            return True
        event[ANSWERED] = True
        self.stats["held_judged"] += 1
        return bool(kept)

    def tick(self, now: float) -> None:
        """Policy files edited: reload them here too (the policy stage does the same)."""
        live = self.policy.live
        if live is not None:
            live.poll(now)
