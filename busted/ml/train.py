"""Fitting and scoring the behavioural model (offline; the only module that imports
scikit-learn).

Rows are JSON lines ``{"label": ..., "features": [...], ...}`` written by
``busted ml collect``. Training fits a random forest and, for comparison, a
histogram gradient-boosting model on the same rows, scores both on a stratified
held-back quarter, and exports the forest (:mod:`busted.ml.model`): its JSON export is
a few node arrays evaluated exactly in pure Python, where boosting's binning and
baseline would need their own evaluator. Everything is seeded: the same rows and seed
give the same file.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from busted.errors import ModelError
from busted.ml.features import FEATURES
from busted.ml.labels import LLM_STREAM, UNKNOWN
from busted.ml.model import Model, from_sklearn

N_TREES = 40
MAX_DEPTH = 12
MIN_LEAF = 2


def read_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        try:
            with open(path) as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    if len(row.get("features", ())) != len(FEATURES):
                        raise ModelError(f"{path}:{n}: a row of {len(row.get('features', ()))} "
                                         f"features, this busted computes {len(FEATURES)}",
                                         "collect the rows again with this version")
                    out.append(row)
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ModelError(f"{path} is not JSON lines: {exc}") from exc
    return out


def labelled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("label") and r["label"] != UNKNOWN]


def forest(seed: int):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=N_TREES, max_depth=MAX_DEPTH,
                                  min_samples_leaf=MIN_LEAF, class_weight="balanced",
                                  random_state=seed, n_jobs=1)


def boosting(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=200, random_state=seed)


def scores(truth: list[str], guess: list[str], classes: list[str]) -> dict[str, Any]:
    """Precision and recall of each class, of "LLM stream vs the rest", and the confusion
    matrix (rows: truth, columns: guess)."""
    pairs = list(zip(truth, guess, strict=True))
    out: dict[str, Any] = {"n": len(truth), "accuracy": _ratio(sum(t == g for t, g in pairs), len(truth))}
    per = {}
    for c in classes:
        tp = sum(t == c and g == c for t, g in pairs)
        fp = sum(t != c and g == c for t, g in pairs)
        fn = sum(t == c and g != c for t, g in pairs)
        per[c] = {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "support": tp + fn}
    out["per_class"] = per
    out["llm_stream_vs_rest"] = per.get(LLM_STREAM, {"precision": 0.0, "recall": 0.0, "support": 0})
    out["confusion"] = {"classes": classes,
                        "rows": [[sum(t == a and g == b for t, g in pairs) for b in classes]
                                 for a in classes]}
    return out


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else 0.0


def train(rows: list[dict[str, Any]], seed: int = 0,
          sources: list[str] | None = None) -> tuple[Model, dict[str, Any]]:
    """Fit the exported forest on every labelled row; compare with boosting on a
    held-back quarter first. Returns the model and the comparison."""
    import numpy as np
    import sklearn
    from sklearn.model_selection import train_test_split

    rows = labelled(rows)
    counts = Counter(r["label"] for r in rows)
    if len(counts) < 2 or min(counts.values()) < 2:
        raise ModelError(f"too few labelled rows to train on: {dict(counts)}",
                         "collect more traffic of at least two kinds (busted ml gather)")
    classes = sorted(counts)
    X = np.array([r["features"] for r in rows], dtype=np.float64)
    y = np.array([r["label"] for r in rows])
    Xa, Xb, ya, yb = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    comparison = {}
    for name, make in (("random_forest", forest), ("hist_gradient_boosting", boosting)):
        est = make(seed)
        t0 = time.perf_counter()
        est.fit(Xa, ya)
        fit_s = time.perf_counter() - t0
        comparison[name] = dict(scores(list(yb), list(est.predict(Xb)), classes), fit_s=round(fit_s, 3))
    final = forest(seed).fit(X, y)
    importances = sorted(zip(FEATURES, (float(v) for v in final.feature_importances_), strict=True),
                         key=lambda kv: -kv[1])
    card = {
        "model": f"RandomForestClassifier(n_estimators={N_TREES}, max_depth={MAX_DEPTH}, "
                 f"min_samples_leaf={MIN_LEAF}, class_weight='balanced')",
        "seed": seed, "sklearn": sklearn.__version__,
        "trained_on": {"rows": len(rows), "per_class": dict(sorted(counts.items())),
                       "sources": list(sources or [])},
        "holdout_quarter": comparison,
        "importance": {k: round(v, 4) for k, v in importances},
    }
    model = from_sklearn(final, classes, card)
    return model, comparison


def evaluate(model: Model, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Scores of the exported model (its own evaluator) on labelled rows."""
    rows = labelled(rows)
    if not rows:
        raise ModelError("no labelled rows to evaluate on")
    truth = [r["label"] for r in rows]
    guess = [model.predict(r["features"])[0] for r in rows]
    classes = sorted(set(model.classes) | set(truth))
    return scores(truth, guess, classes)
