"""The serving path loads ONNX and JSON only: no training libraries, no unpickling."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from bentos.package import package_model
from bentos.runner import OnnxRunner
from skewguard.errors import ParityError


def test_serving_modules_import_no_training_library() -> None:
    code = (
        "import sys, bentos.runner, bentos.service; "
        "print(sorted(m for m in ('sklearn', 'skl2onnx', 'joblib', 'evidently', 'prefect')"
        " if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
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


def test_a_pipeline_that_rejects_unseen_categories_is_refused() -> None:
    X = pd.DataFrame({"x": np.arange(60.0), "c": ["a", "b", "c"] * 20})
    strict = Pipeline(
        [
            ("columns", ColumnTransformer([("n", "passthrough", ["x"]), ("c", OneHotEncoder(), ["c"])])),
            ("model", LogisticRegression()),
        ]
    ).fit(X, (X["x"] > 30).astype(int))
    with pytest.raises(ParityError, match="field 'c'") as refused:
        package_model(strict, X.iloc[:20], name="strict")
    assert refused.value.report["field"] == "c"
