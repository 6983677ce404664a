"""Exchange statistics as the kernel reports them, generated with a seed (tests only)."""

from __future__ import annotations

import random


def stream_exchange(rng: random.Random) -> dict:
    bursts = rng.randint(20, 120)
    gap = rng.uniform(8_000, 50_000)
    gaps = [rng.gauss(gap, gap * 0.3) for _ in range(bursts - 1)]
    first = rng.randint(200_000, 3_000_000)
    return {"index": 1, "closing": False, "tls": True, "tx_bytes": rng.randint(600, 4000),
            "tx_calls": 2, "rx_bytes": bursts * rng.randint(150, 300), "rx_calls": bursts * 2,
            "rx_bursts": bursts, "burst_min": 120, "burst_max": 400, "burst_size": [5, bursts - 5, 0, 0],
            "first_rx_us": first, "last_rx_us": first + int(sum(gaps)), "end_us": first + int(sum(gaps)) + 50,
            "gap_sum_us": int(sum(gaps)), "gap_sq_us": int(sum(g * g for g in gaps)),
            "gap_max_us": int(max(gaps)), "pauses": 0}


def rest_exchange(rng: random.Random) -> dict:
    bursts = rng.choice((1, 1, 2))
    first = rng.randint(1_000, 80_000)
    gap = rng.randint(1_000, 3_000) if bursts == 2 else 0
    size = rng.randint(200, 60_000)
    return {"index": rng.randint(1, 9), "closing": rng.random() < 0.2, "tls": True,
            "tx_bytes": rng.randint(100, 900), "tx_calls": 1, "rx_bytes": size, "rx_calls": bursts * 3,
            "rx_bursts": bursts, "burst_min": size // bursts, "burst_max": size,
            "burst_size": [0, 1, bursts - 1, 0] if size < 8192 else [0, 0, 0, bursts],
            "first_rx_us": first, "last_rx_us": first + gap, "end_us": first + gap + 40,
            "gap_sum_us": gap, "gap_sq_us": gap * gap, "gap_max_us": gap, "pauses": 0}


def rows(seed: int, n: int = 60) -> list[dict]:
    from busted.ml.features import vector

    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2:
            out.append({"label": "llm_stream", "features": vector(stream_exchange(rng))})
        else:
            out.append({"label": "http", "features": vector(rest_exchange(rng))})
    return out
