from __future__ import annotations

import pytest

from busted.states import State, TransitionError, check_transition


def test_the_normal_life_of_a_worker():
    state = State.STOPPED
    for nxt in (State.STARTING, State.RUNNING, State.BACKOFF, State.STARTING, State.RUNNING,
                State.STOPPING, State.STOPPED):
        state = check_transition(state, nxt)
    assert state == State.STOPPED


@pytest.mark.parametrize("old,new", [(State.STOPPED, State.RUNNING),
                                     (State.STOPPING, State.RUNNING),
                                     (State.BACKOFF, State.RUNNING)])
def test_impossible_transitions_fail_loudly(old, new):
    with pytest.raises(TransitionError):
        check_transition(old, new)
