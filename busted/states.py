"""Worker lifecycle states and the transitions the supervisor may make.

::

    STOPPED --spawn--> STARTING --hello--> RUNNING --exit/silence--> BACKOFF --timer--> STARTING
       ^                  |                   |
       |                  +-----exit----------+--> BACKOFF
       +---- STOPPING <--------- stop --------+

Every transition goes through :func:`check_transition`, so an impossible one (a bug in
the supervisor) fails loudly instead of leaving a worker in a confused state.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STOPPED = "stopped"  # not running, not wanted (before start, after stop)
    STARTING = "starting"  # process spawned, no hello yet
    RUNNING = "running"  # said hello, heartbeating
    BACKOFF = "backoff"  # died or hung; waiting before the next spawn
    STOPPING = "stopping"  # asked to drain and exit


_ALLOWED: dict[State, frozenset[State]] = {
    # A stopped worker can only be spawned.
    State.STOPPED: frozenset({State.STARTING}),
    # A starting worker says hello, or dies before it, or is stopped while starting.
    State.STARTING: frozenset({State.RUNNING, State.BACKOFF, State.STOPPING}),
    # A running worker dies or goes silent (backoff) or is asked to stop.
    State.RUNNING: frozenset({State.BACKOFF, State.STOPPING}),
    # From backoff the timer respawns it, or shutdown cancels the respawn.
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED}),
    # A stopping worker ends stopped (exited, or killed at the deadline).
    State.STOPPING: frozenset({State.STOPPED}),
}


class TransitionError(RuntimeError):
    """The supervisor tried a transition the state machine does not allow (a bug)."""


def check_transition(old: State, new: State) -> State:
    if new not in _ALLOWED[old]:
        raise TransitionError(f"worker state cannot go from {old.value} to {new.value}")
    return new
