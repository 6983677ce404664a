"""`busted bench enforce` runs end to end: one short round of each configuration, the
JSON report has its figures, and the enforcing monitor really held the client's writes.
Performance itself is not asserted (bench/README.md has the figures)."""

from __future__ import annotations

import json
import subprocess

import pytest

from .harness.monitor import find_busted

pytestmark = pytest.mark.privileged


def test_bench_enforce_smoke():
    run = subprocess.run([find_busted(), "bench", "enforce", "--rounds", "1", "--duration", "1",
                          "--json"], capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, f"exit {run.returncode}:\n{run.stderr[-3000:]}"
    report = json.loads(run.stdout)
    for config in ("off", "monitor", "enforce"):
        figures = report["configs"][config]
        assert figures["requests"] > 0, config
        assert {"requests_per_s", "p50_ms", "p99_ms", "mean_ms"} <= figures.keys(), config
    for base in ("vs_off", "vs_monitor"):
        assert {"p50", "p99", "mean"} <= report["added_ms"][base].keys()
    assert {"enforce_vs_off", "enforce_vs_monitor", "monitor_vs_off"} <= report["throughput_ratio"].keys()
    holds = report["capture_holds"]
    assert holds["holds"] > 0 and holds["released"] > 0, holds
    assert holds["killed"] == 0, f"nothing in the loop is denied: {holds}"
    assert holds["judged_in_classify"] > 0, f"held writes take the short path: {holds}"
    assert report["traced_holds"]["holds"] > 0, report["traced_holds"]
    assert isinstance(report["goal"]["met"], bool) and report["goal"]["p99_added_ms_max"] == 2.0
