"""A worker told to stop (SIGTERM -> StopWorker) stops, whatever it was doing: the
guards that keep one bad event from stopping a stage must let it through, or a worker
whose supervisor was killed lives on (the kernel's parent-death signal comes once)."""

from __future__ import annotations

import pytest

from busted.policy import engine
from busted.workers.runner import StageLoop
from busted.workers.runtime import Counters, StopWorker


def stopped(*args):
    raise StopWorker()


def loop() -> StageLoop:
    bare = StageLoop.__new__(StageLoop)  # only the guards are exercised
    bare.counters = Counters()
    return bare


def test_the_stage_guards_let_a_stop_through():
    with pytest.raises(StopWorker):
        loop()._guarded(stopped)


def test_processing_a_batch_lets_a_stop_through():
    bare = loop()
    bare.stage = type("Stage", (), {"process": staticmethod(stopped)})()
    with pytest.raises(StopWorker):
        bare._process([{"seq": 1}])


def test_the_policy_engine_panic_guard_lets_a_stop_through():
    assert engine._fatal(StopWorker())
    assert engine._fatal(KeyboardInterrupt())
    assert not engine._fatal(RuntimeError("a policy error"))
