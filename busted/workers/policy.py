"""The policy worker's role logic (a :class:`busted.workers.stage.Stage`).

Pull socket: ``pipe/policy.sock`` (bound); pushes to the next stage's socket.
Placeholder until its own issue lands: events pass through untouched.
"""

from __future__ import annotations

from busted.workers.stage import Stage


class PolicyStage(Stage):
    role = "policy"
    passthrough = True


STAGE = PolicyStage
