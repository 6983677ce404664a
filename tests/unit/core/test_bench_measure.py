"""The helpers every bench shares (busted/bench/measure.py)."""

from __future__ import annotations

import math

from busted.bench.measure import event_totals, percentile


def test_percentile_is_nearest_rank_and_nan_when_empty() -> None:
    samples = sorted([5.0, 1.0, 3.0, 2.0, 4.0])
    assert percentile(samples, 0.5) == 3.0
    assert percentile(samples, 0.99) == 5.0
    assert math.isnan(percentile([], 0.5))


def test_event_totals_sum_the_monitor_runs() -> None:
    runs = [{"produced": 3, "dropped": 1}, {"produced": 4, "lost": 2}]
    assert event_totals(runs) == {"produced": 7, "dropped": 1, "lost": 2, "kernel_lost": 0}
    assert event_totals(runs, ("produced",)) == {"produced": 7}
