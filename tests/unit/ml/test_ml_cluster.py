"""Processes grouped by behaviour (HDBSCAN): an unknown program that streams like known
agents is named "similar to" them; programs that behave otherwise are not."""

from __future__ import annotations

import random

from ml_synthetic import rest_exchange, stream_exchange

from busted.ml.cluster import ProcessBehaviour


def exchanges(name: str, pid: int, make, seed: int, n: int = 6, ml_class: str = "") -> list[dict]:
    rng = random.Random(seed)
    return [{"event_type": "TCP_EXCHANGE", "process_name": name, "pid": pid,
             "exchange": make(rng), "ml_class": ml_class} for _ in range(n)]


def test_an_unknown_streamer_is_similar_to_the_known_agents():
    b = ProcessBehaviour()
    events = [
        *exchanges("claude", 10, stream_exchange, 1, ml_class="llm_stream"),
        *exchanges("claude", 11, stream_exchange, 2, ml_class="llm_stream"),
        *exchanges("python3", 12, stream_exchange, 3, ml_class="llm_stream"),
        {"event_type": "TLS_DATA_READ", "process_name": "python3", "pid": 12,
         "content_class": "LLM_RESPONSE", "agent_sdk": "openai-python"},
        *exchanges("mystery", 13, stream_exchange, 4, ml_class="llm_stream"),
        *exchanges("curl", 20, rest_exchange, 5, ml_class="http"),
        *exchanges("curl", 21, rest_exchange, 6, ml_class="http"),
        *exchanges("wget", 22, rest_exchange, 7, ml_class="http"),
    ]
    for event in events:
        b.feed(event)
    names = b.similar()
    assert names[("mystery", 13)].startswith("similar to ")
    assert "claude" in names[("mystery", 13)]
    assert ("wget", 22) not in names and ("curl", 20) not in names
    assert ("claude", 10) not in names  # known ones are not "similar" to themselves


def test_too_little_to_cluster_gives_nothing():
    b = ProcessBehaviour()
    for event in exchanges("mystery", 1, stream_exchange, 1):
        b.feed(event)
    assert b.similar() == {}
