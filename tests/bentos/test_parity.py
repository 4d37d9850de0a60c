"""The parity gate: a stored graph matches its pipeline, or packaging is refused.

The property: for random multimodal data and each classifier head, ``package_model``
either raises ``ParityError`` or stores a graph that also matches scikit-learn on fresh
random rows it never saw — a gate that waved a wrong graph through would fail here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skl2onnx.sklapi import CastTransformer
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.pipeline import make_pipeline as make_sk_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skewguard.bentos import trees
from skewguard.bentos.builder import GraphBuilder
from skewguard.bentos.exact import EXACT_CONVERTERS, ExactConverter
from skewguard.bentos.inputs import encode_frame
from skewguard.bentos.package import package_model
from skewguard.bentos.parity import check_parity, make_session, require_parity, run_onnx
from skewguard.bentos.preprocessing import same_width_shape
from skewguard.bentos.probes import generate_probes
from skewguard.bentos.store import load_model
from skewguard.bentos.transforms import DatetimeFeatures, ImageFeatures, make_text_vectorizer
from skewguard.errors import ParityError

WORDS = ("red", "mug", "fragile", "big", "café", "sale", "blue", "slim", "naïve", "box")
HEADS = ("lr", "rf", "gb", "hgb")


def make_frame(rng: np.random.Generator, n: int, scale: float) -> pd.DataFrame:
    seconds = rng.integers(1_767_225_600, 1_782_000_000, n)
    seconds[: n // 10] -= seconds[: n // 10] % 3600  # some rows exactly on the hour
    return pd.DataFrame(
        {
            "price": np.round(rng.lognormal(3, 1, n) * scale, 2),
            "quantity": rng.integers(1, 6, n).astype(np.float64),
            "channel": rng.choice(["web", "app", "b2b"], n),
            "order_ts": pd.to_datetime(seconds, unit="s", utc=True),
            "description": [" ".join(rng.choice(WORDS, rng.integers(0, 6))) for _ in range(n)],
            "image": list(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
        }
    )


def make_labels(X: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    hour = X["order_ts"].dt.hour.to_numpy()
    brightness = np.array([img.mean() for img in X["image"]])
    log_price = np.log(X["price"].to_numpy() + 1e-3)
    logit = (
        0.8 * (log_price - np.median(log_price))
        + (hour < 6) * 1.2
        + X["description"].str.contains("fragile").to_numpy() * 1.5
        + (brightness - 127.5) / 4
        + (X["channel"] == "b2b").to_numpy() * 0.7
    )
    return (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)


def make_pipeline(head: str) -> Pipeline:
    columns = ColumnTransformer(
        [
            ("num", StandardScaler() if head == "lr" else "passthrough", ["price", "quantity"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["channel"]),
            ("time", DatetimeFeatures(), "order_ts"),
            ("text", make_text_vectorizer(), "description"),
            ("image", ImageFeatures(grid=2), "image"),
        ],
        sparse_threshold=0.0,
    )
    model: Any = {
        "lr": LogisticRegression(max_iter=1000),
        "rf": RandomForestClassifier(n_estimators=15, random_state=0),
        "gb": GradientBoostingClassifier(n_estimators=20, random_state=0),
        "hgb": HistGradientBoostingClassifier(max_iter=30, random_state=0),
    }[head]
    steps: list[tuple[str, Any]] = [("columns", columns)]
    if head != "lr":
        steps.append(("cast", CastTransformer()))
    return Pipeline([*steps, ("model", model)])


def _package_or_refusal(pipeline: Pipeline, X: pd.DataFrame, name: str) -> str | ParityError:
    try:
        return package_model(pipeline, X, name=name)
    except ParityError as refused:
        return refused


@pytest.mark.slow
@pytest.mark.parametrize("head", HEADS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.01, 1.0, 1e4]))
def test_accepted_graphs_match_on_unseen_rows(head: str, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    X = make_frame(rng, 400, scale)
    pipeline = make_pipeline(head).fit(X, make_labels(X, rng))
    outcome = _package_or_refusal(pipeline, X.iloc[:150], f"prop-{head}")
    if isinstance(outcome, ParityError):
        assert outcome.report["passed"] is False
        assert outcome.report["n_label_mismatches"] + outcome.report["n_over_tolerance"] > 0
        return
    stored = load_model(outcome)
    assert stored.parity["passed"] is True
    fresh = encode_frame(stored.spec, make_frame(rng, 300, scale))
    labels, proba = run_onnx(make_session(stored.onnx), fresh)
    expected = pipeline.predict_proba(fresh.to_frame())
    assert np.abs(proba - expected).max() <= 1e-4
    assert np.array_equal(labels, pipeline.predict(fresh.to_frame()))


def test_forest_with_native_missing_values_routes_them_as_fitted() -> None:
    rng = np.random.default_rng(1)
    X = make_frame(rng, 400, 1.0)
    X.loc[::7, "price"] = np.nan
    pipeline = make_pipeline("rf").fit(X, make_labels(X.fillna(1.0), rng))
    stored = load_model(package_model(pipeline, X.iloc[:100], name="nan-forest", tolerance=1e-6))
    assert stored.spec.get("price").nullable
    fresh = make_frame(rng, 200, 1.0)
    fresh.loc[::3, "price"] = np.nan
    batch = encode_frame(stored.spec, fresh)
    labels, proba = run_onnx(make_session(stored.onnx), batch)
    assert np.abs(proba - pipeline.predict_proba(batch.to_frame())).max() <= 1e-12
    assert np.array_equal(labels, pipeline.predict(batch.to_frame()))


def test_forest_inputs_are_not_nullable_but_hist_boosting_inputs_are() -> None:
    rng = np.random.default_rng(4)
    X = make_frame(rng, 400, 1.0)
    y = make_labels(X, rng)
    forest = load_model(package_model(make_pipeline("gb").fit(X, y), X.iloc[:60], name="gb-null"))
    boosting = load_model(package_model(make_pipeline("hgb").fit(X, y), X.iloc[:60], name="hgb-null"))
    assert not forest.spec.get("price").nullable
    assert boosting.spec.get("price").nullable
    assert boosting.parity["passed"] is True


def test_text_with_uppercase_unicode_passes_the_gate() -> None:
    rng = np.random.default_rng(5)
    X = make_frame(rng, 300, 1.0)
    X.loc[::5, "description"] = "İstanbul ÇAY Straße café K"
    pipeline = make_pipeline("lr").fit(X, make_labels(X, rng))
    stored = load_model(package_model(pipeline, X.iloc[:80], name="unicode-lr"))
    assert stored.parity["passed"] is True
    assert stored.spec.get("description").kind == "text"


def test_gate_catches_a_graph_that_is_off() -> None:
    rng = np.random.default_rng(2)
    X = make_frame(rng, 300, 1.0)
    good = make_pipeline("lr").fit(X, make_labels(X, rng))
    other = make_pipeline("lr").fit(X, 1 - make_labels(X, rng))
    tag = package_model(good, X.iloc[:50], name="good-lr")
    stored = load_model(tag)
    heldout = encode_frame(stored.spec, X.iloc[:50])
    report = check_parity(other, stored.onnx, heldout, generate_probes(other, heldout))
    assert not report.passed
    assert report.max_abs_diff > 1e-4
    with pytest.raises(ParityError, match="failed the parity gate"):
        require_parity(report, "good-lr")


def test_threshold_probes_sit_on_split_thresholds() -> None:
    rng = np.random.default_rng(3)
    X = make_frame(rng, 400, 1.0)
    pipeline = make_pipeline("hgb").fit(X, make_labels(X, rng))
    tag = package_model(pipeline, X.iloc[:60], name="hgb-thresholds")
    report = load_model(tag).parity
    assert report["passed"] is True
    assert report["n_probes"] > 100
    _, probes = generate_probes(pipeline, encode_frame(load_model(tag).spec, X.iloc[:60]))
    at_thresholds = [p.value for p in probes if p.kind == "tree threshold" and p.field == "price"]
    model = pipeline.named_steps["model"]
    thresholds = {
        float(node["num_threshold"])
        for predictors in model._predictors
        for predictor in predictors
        for node in predictor.nodes
        if not node["is_leaf"] and node["feature_idx"] == 0
    }
    nearest = [min(abs(v - t) for t in thresholds) for v in at_thresholds]
    assert at_thresholds
    assert (
        sum(d <= 1e-9 * max(1.0, abs(v)) for d, v in zip(nearest, at_thresholds, strict=True))
        > len(thresholds) // 2
    )


def _one_bit_high_scaler(scope: Any, operator: Any, container: Any) -> None:
    """A StandardScaler converter that is wrong by about one unit in the last place."""
    g = GraphBuilder(scope, container)
    model = operator.raw_operator
    scaled = g.node(
        "Div",
        g.node("Sub", g.as_double(operator.inputs[0]), g.constant("m", [model.mean_])),
        g.constant("s", [model.scale_]),
    )
    nudge = g.node("Mul", g.node("Abs", scaled), g.constant("eps", [2.0**-52]))
    g.node("Add", scaled, nudge, output=operator.outputs[0].full_name)


def _breast_cancer() -> tuple[pd.DataFrame, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X, y.to_numpy()


def test_a_converter_one_bit_off_is_refused_by_the_threshold_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _breast_cancer()
    pipeline = make_sk_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=30)).fit(
        X[::2], y[::2]
    )
    assert load_model(package_model(pipeline, X[1::2].iloc[:40], name="exact-scaler", tolerance=1e-6)).parity[
        "passed"
    ]
    broken = ExactConverter(same_width_shape, _one_bit_high_scaler, "broken on purpose")
    monkeypatch.setitem(EXACT_CONVERTERS, StandardScaler, broken)
    with pytest.raises(ParityError, match="failed the parity gate") as refused:
        package_model(pipeline, X[1::2].iloc[:40], name="broken-scaler", tolerance=1e-6)
    report = refused.value.report
    assert report["n_label_mismatches"] + report["n_over_tolerance"] > 0
    assert any(row["probe"].startswith("tree threshold") for row in report["worst_rows"])


def test_a_forest_converter_that_skips_the_float32_cast_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _breast_cancer()
    pipeline = make_sk_pipeline(RandomForestClassifier(n_estimators=20, random_state=0)).fit(X[::2], y[::2])
    monkeypatch.setattr(trees, "float32_input", trees._as_double_matrix)  # compares float64 X: wrong
    with pytest.raises(ParityError, match="failed the parity gate") as refused:
        package_model(pipeline, X[1::2].iloc[:40], name="uncast-forest", tolerance=1e-6)
    assert any(row["probe"].startswith("tree threshold") for row in refused.value.report["worst_rows"])
