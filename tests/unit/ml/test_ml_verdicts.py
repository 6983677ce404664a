"""The classify worker's behavioural verdicts (busted.ml.verdicts), with a tiny model."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from ml_synthetic import rest_exchange, rows, stream_exchange

from busted import schema
from busted.ml import train as trainer
from busted.ml.verdicts import Behaviour

PID, CONN, SSL = 77, 512, 0x5555


@pytest.fixture(scope="module")
def model():
    return trainer.train(rows(seed=5, n=80), seed=1)[0]


def exchange_event(ex: dict, **extra) -> dict:
    return {"event_type": "TCP_EXCHANGE", "pid": PID, "conn_id": CONN, "seq": 9,
            "sni": "llm.corp.example", "exchange": ex, **extra}


def test_a_blind_stream_is_named_and_its_blind_spot_repeated(model):
    stats: Counter = Counter()
    b = Behaviour(stats, model)
    blind = {"event_type": "BLIND_SPOT", "pid": PID, "conn_id": CONN, "seq": 3,
             "blind_reason": "busted has no probes for GnuTLS"}
    b.blind_spot(blind)
    assert "ml_class" not in blind  # no verdict yet
    ev = exchange_event(stream_exchange(random.Random(1)))
    [again] = b.exchange(ev)
    assert ev["ml_class"] == "llm_stream" and 0.5 < ev["ml_confidence"] <= 1.0
    assert ev["ml_note"] == f"behaves like an LLM stream ({ev['ml_confidence']:.2f})"
    assert again["event_type"] == "BLIND_SPOT" and again["ml_note"] == ev["ml_note"]
    assert again["seq"] == 9 and again["blind_reason"] == blind["blind_reason"]
    assert b.exchange(exchange_event(stream_exchange(random.Random(2)))) == []  # once
    assert stats["ml_verdicts_blind"] == 2


def test_a_blind_spot_is_repeated_when_a_stronger_verdict_comes(model):
    b = Behaviour(Counter(), model)
    blind = {"event_type": "BLIND_SPOT", "pid": PID, "conn_id": CONN}
    b.blind_spot(blind)
    small = exchange_event(rest_exchange(random.Random(5)))
    first = b.exchange(small)  # e.g. session tickets before the answer: not a stream
    assert [e["ml_class"] for e in first] == [small["ml_class"]] and small["ml_class"] != "llm_stream"
    [again] = b.exchange(exchange_event(stream_exchange(random.Random(6))))
    assert again["ml_class"] == "llm_stream"
    assert b.exchange(exchange_event(stream_exchange(random.Random(7)))) == []
    assert b.exchange(small | {"seq": 12}) == []  # never back to a weaker verdict


def test_a_blind_spot_after_the_verdict_carries_it(model):
    b = Behaviour(Counter(), model)
    b.exchange(exchange_event(stream_exchange(random.Random(3))))
    blind = {"event_type": "BLIND_SPOT", "pid": PID, "conn_id": CONN}
    b.blind_spot(blind)
    assert blind["ml_class"] == "llm_stream" and "behaves like an LLM stream" in blind["ml_note"]


def test_a_visible_connection_keeps_its_label_and_disagreements_are_counted(model):
    stats: Counter = Counter()
    b = Behaviour(stats, model)
    b.message({"pid": PID, "conn_id": SSL, "content_class": "HTTP_RESPONSE"})
    ev = exchange_event(stream_exchange(random.Random(4)), plaintext_conn_id=SSL)
    assert b.exchange(ev) == []
    assert ev["ml_class"] == "llm_stream" and "content_class" not in ev
    assert "the classifier saw plain HTTP" in ev["ml_note"]
    agree = exchange_event(rest_exchange(random.Random(5)), plaintext_conn_id=SSL)
    b.exchange(agree)
    assert agree["ml_class"] == "http" and "ml_note" not in agree
    assert stats["ml_disagreements"] == 1 and stats["ml_verdicts_visible"] == 2


def test_handshakes_and_no_model_give_no_verdict(model):
    hello = dict(stream_exchange(random.Random(6)), index=0)
    ev = exchange_event(hello)
    assert Behaviour(Counter(), model).exchange(ev) == [] and "ml_class" not in ev
    ev = exchange_event(stream_exchange(random.Random(6)))
    assert Behaviour(Counter(), None).exchange(ev) == [] and "ml_class" not in ev


def test_a_known_provider_host_is_named_for_policies(model):
    ev = exchange_event(stream_exchange(random.Random(7)), sni="api.openai.com")
    Behaviour(Counter(), model).exchange(ev)
    assert ev["provider"] == "OpenAI"


def test_classify_takes_batches_with_exchanges_and_blind_spots():
    from busted.config import MonitorConfig
    from busted.workers.classify_worker import ClassifyStage

    stage = ClassifyStage(MonitorConfig())
    assert stage.wants(schema.encode_batch([exchange_event({})]))
    assert stage.wants(schema.encode_batch([{"event_type": "BLIND_SPOT"}]))
    assert not stage.wants(schema.encode_batch([{"event_type": "TCP_CONNECT"}]))
