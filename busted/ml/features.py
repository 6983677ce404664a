"""One exchange -> a fixed, ordered feature vector.

An exchange (bpf/connections.bpf.c) is a run of sends followed by a run of receives on
one TCP connection; receives less than 1 ms apart form a burst, which is what one write
of the peer looks like whatever the TLS library's read sizes. A streamed LLM answer is a
small request, a pause while the model thinks, then many small bursts at a steady token
rate; a download is few, huge bursts; a REST call one or two bursts soon after the request.

The order of :data:`FEATURES` is part of the model file: a model names the features it
was trained on and is refused when they differ (:mod:`busted.ml.model`).
"""

from __future__ import annotations

import math
from typing import Any

FEATURES: tuple[str, ...] = (
    "tx_bytes",          # request bytes (ciphertext when TLS)
    "tx_calls",
    "rx_bytes",          # response bytes
    "rx_bursts",         # peer writes, roughly (receives <1 ms apart merged)
    "burst_mean",        # bytes per burst
    "burst_min",
    "burst_max",
    "frac_small",        # share of bursts <= 128 bytes
    "frac_medium",       # <= 1 KiB
    "frac_large",        # <= 8 KiB
    "frac_huge",         # larger
    "ttfb_ms",           # first response byte after the exchange's first send
    "duration_ms",       # first to last response byte
    "gap_mean_ms",       # between bursts
    "gap_std_ms",
    "gap_cv",            # std / mean: a steady token rate is low
    "gap_max_ms",
    "pauses",            # gaps > 100 ms
    "bursts_per_s",
    "rx_bytes_per_s",
    "closing",           # ended by the connection's close rather than a new request
)
# Not a feature: the exchange's index on its connection. It separated the training
# traffic well (REST loops make many exchanges per connection) for a wrong reason: an
# agent's tenth streamed answer on a keep-alive connection is still a stream.


def vector(ex: dict[str, Any]) -> list[float]:
    """The feature vector of one exchange's statistics (the event's ``exchange``)."""
    rx_bytes = float(ex.get("rx_bytes", 0))
    bursts = int(ex.get("rx_bursts", 0))
    sizes = list(ex.get("burst_size") or (0, 0, 0, 0))[:4]
    sizes += [0] * (4 - len(sizes))
    n_gaps = max(bursts - 1, 0)
    gap_sum = float(ex.get("gap_sum_us", 0))
    gap_sq = float(ex.get("gap_sq_us", 0))
    if n_gaps:
        mean = gap_sum / n_gaps
        std = math.sqrt(max(gap_sq / n_gaps - mean * mean, 0.0))
    else:
        mean = std = 0.0
    first = float(ex.get("first_rx_us", 0))
    last = float(ex.get("last_rx_us", 0))
    duration = max(last - first, 0.0) if bursts else 0.0
    seconds = duration / 1e6
    return [
        float(ex.get("tx_bytes", 0)),
        float(ex.get("tx_calls", 0)),
        rx_bytes,
        float(bursts),
        rx_bytes / bursts if bursts else 0.0,
        float(ex.get("burst_min", 0)),
        float(ex.get("burst_max", 0)),
        *[s / bursts if bursts else 0.0 for s in sizes],
        first / 1000 if bursts else 0.0,
        duration / 1000,
        mean / 1000,
        std / 1000,
        std / mean if mean > 0 else 0.0,
        float(ex.get("gap_max_us", 0)) / 1000,
        float(ex.get("pauses", 0)),
        bursts / seconds if seconds > 0 else 0.0,
        rx_bytes / seconds if seconds > 0 else 0.0,
        1.0 if ex.get("closing") else 0.0,
    ]


def judgeable(ex: dict[str, Any]) -> bool:
    """Exchanges worth a verdict: something came back, and it is not a TLS handshake
    (the first exchange of a connection whose ClientHello was seen)."""
    if not ex or int(ex.get("rx_bursts", 0)) < 1:
        return False
    return not (ex.get("tls") and int(ex.get("index", 0)) == 0)
