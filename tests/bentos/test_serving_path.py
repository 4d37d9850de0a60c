"""The serving path loads ONNX and JSON only: no training libraries, no unpickling."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from skewguard.bentos.classes import read_classes
from skewguard.bentos.package import package_model
from skewguard.bentos.runner import OnnxRunner
from skewguard.bentos.store import load_model
from skewguard.errors import InputError


def test_serving_modules_import_no_training_library() -> None:
    code = (
        "import sys, skewguard.bentos.runner, skewguard.bentos.service; "
        "print(sorted(m for m in ('sklearn', 'skl2onnx', 'joblib', 'evidently', 'prefect')"
        " if m in sys.modules))"
    )
    env = os.environ | {"SKEWGUARD_MODEL": "any-model:latest"}  # the service names the model it serves
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "[]"


def test_loading_and_predicting_never_unpickles(monkeypatch: pytest.MonkeyPatch) -> None:
    X = pd.DataFrame({"x": np.arange(60.0), "c": ["a", "b", "c"] * 20})
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [("n", "passthrough", ["x"]), ("c", OneHotEncoder(handle_unknown="ignore"), ["c"])]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(X, (X["x"] > 30).astype(int))
    tag = package_model(pipeline, X.iloc[:20], name="no-pickle")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the serving path unpickled something")

    import cloudpickle

    for module, name in [(pickle, "load"), (pickle, "loads"), (cloudpickle, "load"), (cloudpickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    runner = OnnxRunner.load(tag)
    predictions = runner.predict_rows([{"x": 45.0, "c": "b"}])
    assert predictions[0]["label"] == 1


def _labelled_pipeline() -> tuple[Pipeline, pd.DataFrame]:
    X = pd.DataFrame({"x": np.arange(60.0), "c": ["a", "b", "c"] * 20})
    y = np.where(X["x"] > 30, "high", "low")
    columns = ColumnTransformer(
        [("n", "passthrough", ["x"]), ("c", OneHotEncoder(handle_unknown="ignore"), ["c"])]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression())]).fit(X, y), X


def test_class_labels_travel_in_the_graph_and_serving_never_imports_onnx() -> None:
    pipeline, X = _labelled_pipeline()
    tag = package_model(pipeline, X.iloc[:20], name="classes-recorded")
    stored = load_model(tag)
    assert read_classes(stored.onnx) == ("high", "low")  # what the graph itself says
    code = (
        "import json, sys; from bentos.runner import OnnxRunner; "
        f"runner = OnnxRunner.load({tag!r}); "
        "answer = runner.predict_rows([{'x': 45.0, 'c': 'b'}])[0]; "
        "loaded = sorted(m for m in ('onnx', 'ml_dtypes') if m in sys.modules); "
        "print(json.dumps([runner.classes_, answer, loaded]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    classes, answer, imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert classes == ["high", "low"]
    assert answer["label"] == "high"
    assert set(answer["probabilities"]) == {"high", "low"}
    assert imported == []  # onnx (and its ml_dtypes, ~1-2 s of start-up) stays out of serving


def test_a_graph_packaged_without_its_class_record_is_still_read() -> None:
    pipeline, X = _labelled_pipeline()
    stored = load_model(package_model(pipeline, X.iloc[:20], name="classes-unrecorded"))
    graph = onnx.load_from_string(stored.onnx)
    del graph.metadata_props[:]  # as graphs packaged before the record existed
    older = dataclasses.replace(stored, onnx=graph.SerializeToString())
    runner = OnnxRunner(older)
    assert runner.classes_ == ("high", "low")
    assert runner.predict_rows([{"x": 2.0, "c": "a"}])[0]["label"] == "low"


def test_a_pipeline_that_rejects_unseen_categories_refuses_them_in_serving_too() -> None:
    X = pd.DataFrame({"x": np.arange(60.0), "c": ["a", "b", "c"] * 20})
    strict = Pipeline(
        [
            ("columns", ColumnTransformer([("n", "passthrough", ["x"]), ("c", OneHotEncoder(), ["c"])])),
            ("model", LogisticRegression()),
        ]
    ).fit(X, (X["x"] > 30).astype(int))
    stored = load_model(package_model(strict, X.iloc[:20], name="strict", tolerance=1e-6))
    assert "upper-cased category" in stored.parity["rejected_fields"]["c"]
    runner = OnnxRunner(stored)
    assert runner.predict_rows([{"x": 45.0, "c": "b"}])[0]["label"] == 1
    with pytest.raises(InputError, match="rejects some values of 'c'") as refused:
        runner.predict_rows([{"x": 45.0, "c": "b"}, {"x": 45.0, "c": "unheard of"}])
    assert refused.value.field == "c"
    assert refused.value.status_code == 422
