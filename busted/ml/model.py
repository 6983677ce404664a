"""The behavioural model file and its evaluator.

A model is a random forest exported to plain JSON, never a pickle: unpickling runs
code, and the daemon that reads the file runs as root. The file holds the feature
names (they must equal :data:`busted.ml.features.FEATURES`), the classes, each tree's
node arrays, and the model card (training data, scores). The evaluator walks the
trees in pure Python and gives exactly scikit-learn's ``predict_proba``: features are
rounded to float32 as scikit-learn does before comparing them with the thresholds, and
each tree's leaf probabilities are summed in tree order and divided by the tree count.

A file that is missing, not JSON, of another format version, for other features, or
whose trees do not hold together raises :class:`ModelError`; :func:`load_or_none` turns
that into one log line and no model (no ML verdicts, never a crash).
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busted.errors import ModelError
from busted.ml.features import FEATURES

FORMAT = "busted-ml-forest"
VERSION = 1
DEFAULT_PATH = Path(__file__).resolve().parent / "default_model.json"
MAX_BYTES = 16 * 1024 * 1024

log = logging.getLogger("busted.ml")
_F32 = struct.Struct("<f")


def as_float32(x: float) -> float:
    """x rounded to the nearest float32, as scikit-learn's trees see their input."""
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return float("inf") if x > 0 else float("-inf")


@dataclass
class Tree:
    left: list[int]
    right: list[int]
    feature: list[int]
    threshold: list[float]
    proba: list[list[float]]  # per node: class probabilities (used at leaves)

    def leaf(self, x: list[float]) -> list[float]:
        node = 0
        left, right, feature, threshold = self.left, self.right, self.feature, self.threshold
        while left[node] >= 0:
            node = left[node] if x[feature[node]] <= threshold[node] else right[node]
        return self.proba[node]


@dataclass
class Model:
    features: tuple[str, ...]
    classes: tuple[str, ...]
    trees: list[Tree]
    card: dict[str, Any] = field(default_factory=dict)

    def proba(self, vec: list[float]) -> list[float]:
        x = [as_float32(v) for v in vec]
        total = [0.0] * len(self.classes)
        for tree in self.trees:
            for i, p in enumerate(tree.leaf(x)):
                total[i] += p
        n = len(self.trees)
        return [t / n for t in total]

    def predict(self, vec: list[float]) -> tuple[str, float]:
        """(class, probability) of the most probable class."""
        p = self.proba(vec)
        best = max(range(len(p)), key=p.__getitem__)  # first of equals, as numpy.argmax
        return self.classes[best], p[best]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "features": list(self.features),
            "classes": list(self.classes), "card": self.card,
            "trees": [{"left": t.left, "right": t.right, "feature": t.feature,
                       "threshold": t.threshold, "proba": t.proba} for t in self.trees],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")


def from_sklearn(forest: Any, classes: list[str], card: dict[str, Any]) -> Model:
    """Export a fitted ``RandomForestClassifier`` (no sklearn import needed here)."""
    import numpy as np

    trees = []
    for est in forest.estimators_:
        t = est.tree_
        value = t.value[:, 0, :]
        proba = value / value.sum(axis=1, keepdims=True)
        trees.append(Tree(left=[int(v) for v in t.children_left],
                          right=[int(v) for v in t.children_right],
                          feature=[int(v) if v >= 0 else 0 for v in t.feature],
                          threshold=[float(v) for v in t.threshold],
                          proba=[[float(p) for p in row] for row in np.asarray(proba)]))
    names = [classes[int(c)] if not isinstance(c, str) else c for c in forest.classes_]
    return Model(tuple(FEATURES), tuple(names), trees, card)


def parse(doc: Any) -> Model:
    """Check a model document's shape completely; :class:`ModelError` otherwise."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError("not a busted behavioural model (format field missing or wrong)")
    if doc.get("version") != VERSION:
        raise ModelError(f"model format version {doc.get('version')!r}, this busted reads {VERSION}",
                         "retrain it with `busted ml train` of this version")
    features = doc.get("features")
    if features != list(FEATURES):
        raise ModelError("the model was trained on other features than this busted computes",
                         "retrain it with `busted ml train` of this version")
    classes = doc.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelError("the model's classes are missing")
    raw_trees = doc.get("trees")
    if not isinstance(raw_trees, list) or not raw_trees:
        raise ModelError("the model has no trees")
    trees = [_tree(t, len(features), len(classes)) for t in raw_trees]
    card = doc.get("card") if isinstance(doc.get("card"), dict) else {}
    return Model(tuple(features), tuple(classes), trees, card)


def _tree(t: Any, n_features: int, n_classes: int) -> Tree:
    try:
        left, right, feature = list(t["left"]), list(t["right"]), list(t["feature"])
        threshold, proba = [float(v) for v in t["threshold"]], list(t["proba"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ModelError(f"a tree of the model is malformed: {exc}") from exc
    n = len(left)
    if not n or any(len(a) != n for a in (right, feature, threshold, proba)):
        raise ModelError("a tree of the model has node arrays of different lengths")
    for i in range(n):
        lo, hi, f = left[i], right[i], feature[i]
        if not all(isinstance(v, int) for v in (lo, hi, f)):
            raise ModelError("a tree of the model has a non-integer index")
        # scikit-learn numbers children after their parent: no loops, walks end
        if lo >= 0 and not (i < lo < n and i < hi < n and 0 <= f < n_features):
            raise ModelError("a tree of the model points outside itself")
        row = proba[i]
        if not isinstance(row, list) or len(row) != n_classes or not all(
                isinstance(p, (int, float)) for p in row):
            raise ModelError("a tree of the model has a leaf of the wrong shape")
        proba[i] = [float(p) for p in row]
    return Tree(left, right, feature, threshold, proba)


def load(path: str | Path) -> Model:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"cannot read the model {path}: {exc.strerror}") from exc
    if len(data) > MAX_BYTES:
        raise ModelError(f"the model {path} is larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"the model {path} is not JSON: {exc}") from exc
    try:
        return parse(doc)
    except ModelError as exc:
        raise ModelError(f"the model {path}: {exc.message}", exc.hint) from exc


def load_or_none(path: str | Path | None = None) -> Model | None:
    """The model, or None after one log line: the daemon runs on without ML verdicts."""
    path = DEFAULT_PATH if path is None else path
    try:
        return load(path)
    except ModelError as exc:
        log.warning("no behavioural verdicts: %s", exc.message)
        return None
