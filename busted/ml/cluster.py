"""Processes grouped by how they behave (scikit-learn's HDBSCAN), so a program busted
cannot read that behaves like a known agent is named "similar to <agent>".

Each process gets a profile: the mean of its exchanges' feature vectors (log-scaled, so
a byte count and a share weigh alike) and the share of each behavioural class. A process
is *known* when busted read its plaintext and saw it talk to an LLM (its messages named
a provider or an agent SDK) or its name is a known agent's. HDBSCAN clusters the
profiles; an unknown process in a cluster with known ones is "similar to" them. Density
clustering fits here: it needs no number of clusters and leaves outliers alone instead
of forcing every process next to some agent.

Bounded: at most :data:`MAX_PROCESSES` profiles (the least recent go).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from busted.kernel.lru import Lru
from busted.ml.features import FEATURES, judgeable, vector
from busted.ml.labels import RANK

MAX_PROCESSES = 2048
MIN_EXCHANGES = 2  # a profile needs this many judged exchanges
CLASSES = tuple(sorted(RANK))


@dataclass
class Profile:
    name: str
    pid: int
    exchanges: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    classes: dict[str, int] = field(default_factory=dict)
    known_as: str = ""  # what busted read it as: an agent SDK or "<process> -> <provider>"

    def vector(self) -> list[float]:
        n = max(self.exchanges, 1)
        shares = [self.classes.get(c, 0) / n for c in CLASSES]
        return [math.log1p(max(s / n, 0.0)) for s in self.sums] + shares


class ProcessBehaviour:
    """Feed it events (any); ask :meth:`similar` for the names."""

    def __init__(self, agent_names: frozenset[str] | None = None) -> None:
        if agent_names is None:
            from busted.kernel.blindspots import AGENT_NAMES

            agent_names = AGENT_NAMES
        self.agent_names = agent_names
        self.profiles: Lru = Lru(MAX_PROCESSES)  # (process name, pid) -> Profile

    def _profile(self, name: str, pid: int) -> Profile:
        prof = self.profiles.get((name, pid))
        if prof is None:
            prof = Profile(name, pid)
            if name in self.agent_names:
                prof.known_as = name
        self.profiles[(name, pid)] = prof  # most recent last
        return prof

    def feed(self, event: dict[str, Any]) -> None:
        name = event.get("process_name") or ""
        if not name:
            return
        if event.get("event_type") == "TCP_EXCHANGE":
            ex = event.get("exchange")
            if not isinstance(ex, dict) or not judgeable(ex):
                return
            prof = self._profile(name, int(event.get("pid") or 0))
            prof.exchanges += 1
            for i, v in enumerate(vector(ex)):
                prof.sums[i] += v
            cls = event.get("ml_class") or ""
            if cls:
                prof.classes[cls] = prof.classes.get(cls, 0) + 1
        elif str(event.get("content_class") or "").startswith(("LLM_", "MCP_")):
            prof = self._profile(name, int(event.get("pid") or 0))
            if not prof.known_as:
                prof.known_as = event.get("agent_sdk") or name

    def similar(self) -> dict[tuple[str, int], str]:
        """(process name, pid) -> "similar to <known, ...>" for unknown processes that cluster
        with known ones. Needs scikit-learn; empty without it or with too few profiles."""
        profiles = [p for p in self.profiles.values() if p.exchanges >= MIN_EXCHANGES]
        if len(profiles) < 3 or not any(p.known_as for p in profiles):
            return {}
        try:
            import numpy as np
            from sklearn.cluster import HDBSCAN
        except ImportError:
            return {}
        X = np.array([p.vector() for p in profiles])
        spread = X.std(axis=0)
        X = (X - X.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
        labels = HDBSCAN(min_cluster_size=2, min_samples=1, copy=True).fit(X).labels_
        out: dict[tuple[str, int], str] = {}
        for cluster in set(labels) - {-1}:
            members = [p for p, c in zip(profiles, labels, strict=True) if c == cluster]
            known = sorted({p.known_as for p in members if p.known_as})
            if not known:
                continue
            for p in members:
                if not p.known_as:
                    out[(p.name, p.pid)] = "similar to " + ", ".join(known[:3])
        return out
