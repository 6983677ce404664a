"""The identity worker's role logic (a :class:`busted.workers.stage.Stage`).

Pull socket: ``pipe/identity.sock`` (bound); pushes to the next stage's socket.
Placeholder until its own issue lands: events pass through untouched.
"""

from __future__ import annotations

from busted.workers.stage import Stage


class IdentityStage(Stage):
    role = "identity"
    passthrough = True


STAGE = IdentityStage
