"""`busted bench ui` runs end to end (its numbers belong to benchmarks, not tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gui


def test_bench_ui_reports_frames_at_an_incoming_rate():
    env = dict(os.environ)
    env.pop("DISPLAY", None)  # the bench starts its own Xvfb, as in CI
    out = subprocess.run(
        [sys.executable, "-m", "busted", "bench", "ui", "--rate", "2000", "--duration", "2",
         "--json"],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    (result,) = report["results"]
    assert result["rate"] == 2000
    assert result["frames"] > 5 and result["fps"] > 0
    assert result["events_received_per_s"] > 0
    for key in ("frame_ms_p50", "frame_ms_p99", "update_ms_p50", "render_ms_p50"):
        assert result[key] > 0
