"""The behavioural model in the daemon: verdicts on ``TCP_EXCHANGE`` events, in the
classify worker (never in capture).

- An exchange worth judging (:func:`busted.ml.features.judgeable`) gets ``ml_class`` and
  ``ml_confidence``. On a connection whose plaintext busted did not see, ``ml_note``
  says what it behaves like ("behaves like an LLM stream (0.94)").
- On a visible connection the classifier's label stands; the model's guess is added
  and, where the two disagree, counted (``ml_disagreements``) and noted: that is how
  drift of the model shows.
- A ``BLIND_SPOT`` of a connection carries the latest verdict on it; when a verdict
  comes after the blind spot was reported, the blind spot is repeated with it, once per
  stronger class (http, then an LLM stream: small exchanges before the answer come first).

A missing or broken model means no verdicts (one log line at start), nothing else.
Memory is bounded: two LRU tables of connections.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from busted.classifier.providers import provider_for_host
from busted.kernel.lru import Lru
from busted.ml import labels
from busted.ml.features import judgeable, vector
from busted.ml.model import DEFAULT_PATH, Model, load_or_none

Event = dict[str, Any]
MAX_CONNECTIONS = 16384
MODEL_ENV = "BUSTED_ML_MODEL"  # another model file, or "off"


def note(ml_class: str, confidence: float) -> str:
    return f"behaves like {labels.DESCRIPTION.get(ml_class, ml_class)} ({confidence:.2f})"


class Behaviour:
    def __init__(self, stats: Counter | dict, model: Model | None | str = "default") -> None:
        if model == "default":
            choice = os.environ.get(MODEL_ENV, "")
            model = None if choice == "off" else load_or_none(choice or DEFAULT_PATH)
        self.model: Model | None = model  # type: ignore[assignment]
        self.stats = stats
        self._visible = labels.Labeller(Lru(MAX_CONNECTIONS))  # what the classifier saw
        self._verdicts: Lru = Lru(MAX_CONNECTIONS)  # (pid, tcp conn_id) -> (class, p)
        self._blind: Lru = Lru(MAX_CONNECTIONS)  # (pid, tcp conn_id) -> its BLIND_SPOT
        self._repeated: Lru = Lru(MAX_CONNECTIONS)

    def message(self, event: Event) -> None:
        """A classified message: remember what its connection carries."""
        self._visible.see(event)

    def exchange(self, event: Event) -> list[Event]:
        """Judge an exchange in place; returns a repeated BLIND_SPOT when one is due."""
        model = self.model
        ex = event.get("exchange")
        if model is None or not isinstance(ex, dict) or not judgeable(ex):
            return []
        try:
            ml_class, confidence = model.predict(vector(ex))
        except (TypeError, ValueError, IndexError):
            self.stats["ml_bad_exchanges"] += 1
            return []
        confidence = round(confidence, 4)
        event["ml_class"], event["ml_confidence"] = ml_class, confidence
        self.stats["ml_verdicts"] += 1
        if event.get("plaintext_conn_id"):
            seen = self._visible.label(event)
            self.stats["ml_verdicts_visible"] += 1
            if seen != labels.UNKNOWN and seen != ml_class:
                self.stats["ml_disagreements"] += 1
                event["ml_note"] = (f"{note(ml_class, confidence)}; "
                                    f"the classifier saw {labels.DESCRIPTION[seen]}")
            return []
        event["ml_note"] = note(ml_class, confidence)
        if not event.get("provider"):  # for policies: is this a known provider's host?
            provider = provider_for_host(event.get("sni") or event.get("dns_name") or "")
            if provider:
                event["provider"] = provider
        self.stats["ml_verdicts_blind"] += 1
        key = (event.get("pid", 0), event.get("conn_id", 0))
        self._verdicts[key] = (ml_class, confidence)
        blind = self._blind.get(key)
        told = self._repeated.get(key)
        # Said again once per stronger verdict, not per exchange: a TLS stack's small
        # exchanges before the answer (session tickets) are judged http first.
        if blind is None or (told is not None and labels.RANK[ml_class] <= labels.RANK[told]):
            return []
        self._repeated[key] = ml_class
        again = dict(blind, seq=event.get("seq", blind.get("seq", 0)),
                     timestamp=event.get("timestamp", blind.get("timestamp")))
        self._annotate(again, ml_class, confidence)
        return [again]

    def blind_spot(self, event: Event) -> None:
        """A BLIND_SPOT passing by: give it the connection's verdict, or remember it."""
        key = (event.get("pid", 0), event.get("conn_id", 0))
        self._blind[key] = dict(event)  # a stronger verdict later repeats it
        verdict = self._verdicts.get(key)
        if verdict is not None:
            self._repeated[key] = verdict[0]
            self._annotate(event, *verdict)

    @staticmethod
    def _annotate(event: Event, ml_class: str, confidence: float) -> None:
        event["ml_class"], event["ml_confidence"] = ml_class, confidence
        event["ml_note"] = note(ml_class, confidence)
