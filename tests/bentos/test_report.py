"""The packaging report: each step's converter and measured difference, or the refused step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from skewguard.bentos.package import package_model
from skewguard.bentos.report import render_outcome
from skewguard.bentos.store import load_model
from skewguard.errors import UnsupportedStepError


def _data(n: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "price": rng.lognormal(3, 1, n),
            "channel": rng.choice(["web", "app"], n),
            "note": rng.choice(["café crème", "東京 タワー", "late parcel"], n),
        }
    )
    return X, (X["price"] > 20).to_numpy().astype(int)


def _columns() -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("price", StandardScaler(), ["price"]),
            ("channel", OneHotEncoder(handle_unknown="ignore"), ["channel"]),
            ("note", TfidfVectorizer(), "note"),
        ]
    )


def test_every_step_and_nested_transformer_is_reported_with_its_difference() -> None:
    X, y = _data()
    pipeline = make_pipeline(_columns(), LogisticRegression()).fit(X, y)
    tag = package_model(pipeline, X.iloc[:40], name="reported")
    steps = {s["step"]: s for s in load_model(tag).parity["steps"]}
    assert list(steps) == [
        "columntransformer",
        "columntransformer/price",
        "columntransformer/channel",
        "columntransformer/note",
        "logisticregression",
    ]
    assert all(s["max_abs_diff"] is not None and s["max_abs_diff"] <= 1e-12 for s in steps.values())
    assert "Tokenizer" in steps["columntransformer/note"]["conversion"]
    assert "answers NaN, as scikit-learn raises" in steps["logisticregression"]["conversion"]
    text = render_outcome("reported", pipeline, tag=tag)
    assert text.splitlines()[0].startswith(f"{tag} (classification): packaged; max |Δp| ")
    assert any(line.startswith("  columntransformer/note") for line in text.splitlines())


def test_a_refusal_marks_the_step_it_refuses() -> None:
    X, y = _data()
    pipeline = make_pipeline(_columns(), LinearSVC()).fit(X, y)
    with pytest.raises(UnsupportedStepError) as refused:
        package_model(pipeline, X.iloc[:40], name="refused")
    assert refused.value.step == "linearsvc"
    assert "CalibratedClassifierCV" in refused.value.remedy
    lines = render_outcome("refused", pipeline, error=refused.value).splitlines()
    assert lines[0] == "refused: refused at step 'linearsvc'"
    assert [line.split()[0] for line in lines if "REFUSED" in line] == ["linearsvc"]
