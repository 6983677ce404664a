"""Training is deterministic; the JSON model gives exactly scikit-learn's probabilities;
a broken model file is refused with one clear error (no crash, no verdicts)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from ml_synthetic import rows

from busted.errors import ModelError
from busted.ml import model as mlmodel
from busted.ml import train as trainer
from busted.ml.features import FEATURES


@pytest.fixture(scope="module")
def fitted():
    data = rows(seed=3, n=80)
    model, comparison = trainer.train(data, seed=7)
    return data, model, comparison


def test_training_twice_gives_the_same_file(fitted, tmp_path):
    data, model, _ = fitted
    again, _ = trainer.train(rows(seed=3, n=80), seed=7)
    a, b = model.to_json(), again.to_json()
    for doc in (a, b):  # fit times differ from run to run; everything else must not
        for scores in doc["card"]["holdout_quarter"].values():
            scores.pop("fit_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_the_json_evaluator_equals_sklearn(fitted, tmp_path):
    data, model, _ = fitted
    X = np.array([r["features"] for r in data] + [r["features"] for r in rows(seed=99, n=40)])
    y = np.array([r["label"] for r in data])
    forest = trainer.forest(7).fit(X[: len(y)], y)
    exported = mlmodel.from_sklearn(forest, list(forest.classes_), {})
    path = tmp_path / "m.json"
    exported.save(path)
    loaded = mlmodel.load(path)
    ours = np.array([loaded.proba(list(x)) for x in X])
    assert np.array_equal(ours, forest.predict_proba(X))
    assert [loaded.predict(list(x))[0] for x in X] == list(forest.predict(X))


def test_the_model_separates_the_tiny_set(fitted):
    _, model, comparison = fitted
    held = trainer.evaluate(model, rows(seed=11, n=40))
    assert held["llm_stream_vs_rest"]["recall"] == 1.0
    assert held["confusion"]["classes"] == ["http", "llm_stream"]
    assert set(comparison) == {"random_forest", "hist_gradient_boosting"}
    assert set(model.card["importance"]) == set(FEATURES)


def _tree0(doc, **change):
    return json.dumps(dict(doc, trees=[dict(doc["trees"][0], **change)]))


@pytest.mark.parametrize("damage", [
    lambda doc: "not json at all {",
    lambda doc: json.dumps(dict(doc, version=99)),
    lambda doc: json.dumps(dict(doc, format="pickle")),
    lambda doc: json.dumps(dict(doc, features=doc["features"][:-1])),
    lambda doc: json.dumps(dict(doc, trees=[])),
    lambda doc: _tree0(doc, left=[0] * len(doc["trees"][0]["left"])),  # a loop
    lambda doc: _tree0(doc, proba=[[0.5]] * len(doc["trees"][0]["left"])),
    lambda doc: _tree0(doc, feature=["x"] * len(doc["trees"][0]["left"])),
    lambda doc: json.dumps([1, 2, 3]),
])
def test_a_broken_model_is_refused(fitted, tmp_path, damage, caplog):
    _, model, _ = fitted
    path = tmp_path / "bad.json"
    path.write_text(damage(model.to_json()))
    with pytest.raises(ModelError):
        mlmodel.load(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="busted.ml"):
        assert mlmodel.load_or_none(path) is None
    assert len(caplog.records) == 1 and "no behavioural verdicts" in caplog.records[0].getMessage()


def test_a_missing_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        mlmodel.load(tmp_path / "none.json")
    assert mlmodel.load_or_none(tmp_path / "none.json") is None


def test_the_shipped_model_loads():
    model = mlmodel.load(mlmodel.DEFAULT_PATH)
    assert "llm_stream" in model.classes and model.card["heldout"]["n"] > 0
