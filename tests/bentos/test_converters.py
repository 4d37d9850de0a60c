"""The ONNX graphs of the feature transformers compute what scikit-learn computes.

Alone and inside ColumnTransformer pipelines converted the way the packager converts them,
compared with onnxruntime on boundary timestamps, extreme numbers and synthetic images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skl2onnx import to_onnx
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
from skl2onnx.sklapi import CastTransformer
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from skewguard.bentos.converters import register_converters
from skewguard.bentos.images import IMAGE_SIZE, IMAGE_VALUES
from skewguard.bentos.transforms import (
    DatetimeFeatures,
    ImageFeatures,
    SignedLog1p,
    make_text_vectorizer,
    to_epoch_seconds,
)
from skewguard.errors import ConversionError

OPSET = {"": 17, "ai.onnx.ml": 3}
TOLERANCE = 1e-5
DAYS = ("1969-12-31", "1970-01-01", "2024-02-29", "2026-03-01", "2026-03-02", "2099-12-31")
WORDS = ("red", "Red", "mug", "fragile", "café", "İstanbul", "naïve", "box", "KELVIN", "sale")


def boundary_seconds() -> np.ndarray:
    """Every hour boundary of some days (incl. before 1970), exactly and ±1 s / ±1 µs."""
    starts = pd.to_datetime(list(DAYS)).as_unit("s").asi8.astype(np.float64)
    hours = (starts[:, None] + 3600.0 * np.arange(25)[None, :]).ravel()
    offsets = np.array([0.0, -1.0, 1.0, -1e-6, 1e-6, 0.5])
    return (hours[:, None] + offsets[None, :]).ravel()


def session(model: Any) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def convert_alone(transformer: Any, input_type: Any) -> ort.InferenceSession:
    register_converters()
    return session(to_onnx(transformer, initial_types=[("X", input_type)], target_opset=OPSET))


def run(sess: ort.InferenceSession, X: np.ndarray) -> np.ndarray:
    result: np.ndarray = sess.run(None, {"X": X})[0]
    return result


def test_register_converters_is_idempotent() -> None:
    register_converters()
    register_converters()
    X = np.array([[0.0], [1.5e9]])
    sess = convert_alone(DatetimeFeatures().fit(X), DoubleTensorType([None, 1]))
    np.testing.assert_array_equal(run(sess, X)[:, :2], DatetimeFeatures().fit_transform(X)[:, :2])


def test_datetime_graph_matches_on_hour_and_day_boundaries() -> None:
    seconds = np.concatenate([boundary_seconds(), [np.nan, 2.0**53, -(2.0**60)]]).reshape(-1, 1)
    transformer = DatetimeFeatures().fit(seconds)
    sess = convert_alone(transformer, DoubleTensorType([None, 1]))
    expected, actual = transformer.transform(seconds), run(sess, seconds)
    assert sess.get_outputs()[0].type == "tensor(double)"
    np.testing.assert_array_equal(actual[:, :2], expected[:, :2])  # hour and weekday exactly
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)
    assert np.isnan(actual[-3:]).all()
    assert np.isnan(run(sess, np.array([[np.inf], [-np.inf]]))).all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-4e9, max_value=8e9, allow_nan=False) | st.integers(-4e9, 8e9).map(float),
        min_size=1,
        max_size=30,
    )
)
def test_datetime_graph_matches_on_any_epoch_seconds(values: list[float]) -> None:
    seconds = np.array(values).reshape(-1, 1)
    transformer = DatetimeFeatures().fit(seconds)
    actual = run(convert_alone(transformer, DoubleTensorType([None, 1])), seconds)
    np.testing.assert_array_equal(actual[:, :2], transformer.transform(seconds)[:, :2])


def test_signed_log_graph_matches_on_extremes() -> None:
    tiny, huge = np.finfo(np.float64).tiny, np.finfo(np.float64).max
    column = np.array([0.0, -0.0, tiny, -1e-12, 1e-8, 1.0, -1.0, 1e6, -1e15, huge, -huge, np.nan])
    X = np.column_stack([column, -column, column * 1e-3])
    transformer = SignedLog1p().fit(X)
    sess = convert_alone(transformer, DoubleTensorType([None, 3]))
    assert sess.get_outputs()[0].type == "tensor(double)"
    np.testing.assert_allclose(run(sess, X), transformer.transform(X), rtol=1e-12, atol=1e-12)
    inf = np.array([[np.inf, -np.inf, 1.0]])
    np.testing.assert_array_equal(run(sess, inf), transformer.transform(inf))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=30))
def test_signed_log_graph_matches_on_any_float(values: list[float]) -> None:
    X = np.array(values).reshape(-1, 1)
    transformer = SignedLog1p().fit(X)
    actual = run(convert_alone(transformer, DoubleTensorType([None, 1])), X)
    np.testing.assert_allclose(actual, transformer.transform(X), rtol=1e-12, atol=1e-12)


def synthetic_images(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """All black, all white, uniform noise, half/half, then random colour blocks."""
    shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    halves = np.zeros(shape, dtype=np.uint8)
    halves[:, IMAGE_SIZE // 2 :] = 255
    fixed = [np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8), halves]
    noise = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n // 2)]
    low = [rng.integers(0, 4, (4, 4, 3), dtype=np.uint8) * 85 for _ in range(n - n // 2)]
    blocks = [np.kron(b, np.ones((8, 8, 1), dtype=np.uint8)) for b in low]
    return fixed + noise + blocks


@pytest.mark.parametrize("grid", [1, 3, 4])
def test_image_graph_matches_on_black_white_and_noise(grid: int) -> None:
    images = synthetic_images(np.random.default_rng(grid), 20)
    flat = np.stack([img.reshape(-1) for img in images]).astype(np.float32)
    transformer = ImageFeatures(grid=grid).fit(pd.Series(images))
    sess = convert_alone(transformer, FloatTensorType([None, IMAGE_VALUES]))
    assert sess.get_outputs()[0].type == "tensor(double)"
    actual, expected = run(sess, flat), transformer.transform(pd.Series(images))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)
    assert actual[0].max() == 0.0
    np.testing.assert_allclose(actual[1, -3:], 0.0, atol=1e-6)


def test_datetime_graph_refuses_float32_seconds() -> None:
    register_converters()
    transformer = DatetimeFeatures().fit(np.array([[1.7e9]]))
    with pytest.raises(ConversionError, match="float64"):
        to_onnx(transformer, initial_types=[("X", FloatTensorType([None, 1]))], target_opset=OPSET)


def test_image_graph_refuses_a_narrow_input() -> None:
    register_converters()
    transformer = ImageFeatures().fit(np.zeros((1, IMAGE_VALUES)))
    with pytest.raises(ConversionError, match="3072"):
        to_onnx(transformer, initial_types=[("X", FloatTensorType([None, 10]))], target_opset=OPSET)


def make_frame(rng: np.random.Generator, n: int, *, with_nat: bool = False) -> pd.DataFrame:
    seconds = rng.choice(boundary_seconds(), n)
    seconds[: n // 2] = rng.integers(1_700_000_000, 1_800_000_000, n // 2)
    if with_nat:  # only trees take missing values
        seconds[::9] = np.nan
    amount = rng.choice([0.0, -0.0, 1e-9, -3.5, 12.0, 1e7, -1e9, 1e12], n) * rng.uniform(0.5, 2, n)
    return pd.DataFrame(
        {
            "order_ts": pd.to_datetime(seconds, unit="s", utc=True).tz_convert("Europe/Berlin"),
            "amount": amount,
            "city": rng.choice(["Berlin", "Paris", "Zürich"], n),
            "text": [" ".join(rng.choice(WORDS, rng.integers(0, 6))) for _ in range(n)],
            "image": synthetic_images(rng, n - 3),
        }
    )


def make_labels(X: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    hour = X["order_ts"].dt.tz_convert("UTC").dt.hour.to_numpy()
    bright = np.array([img.mean() for img in X["image"]]) / 255
    logit = (hour < 8) * 1.5 + np.sign(X["amount"].to_numpy()) + X["text"].str.contains("fragile") * 1.2
    logit = logit + 2 * (bright - 0.5) - 0.8
    return (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)


def make_pipeline(head: str) -> Pipeline:
    columns = ColumnTransformer(
        [
            ("time", DatetimeFeatures(), "order_ts"),
            ("amount", SignedLog1p(), ["amount"]),
            ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("text", make_text_vectorizer(), "text"),
            ("image", ImageFeatures(), "image"),
        ]
    )
    models: dict[str, Any] = {
        "lr": LogisticRegression(max_iter=2000),
        "hgb": HistGradientBoostingClassifier(max_iter=40, random_state=0),
        # An odd number of fully grown trees cannot tie at 0.5, where float32 sums in
        # onnxruntime (0.49999994) and float64 in scikit-learn pick different labels.
        "rf": RandomForestClassifier(n_estimators=21, random_state=0),
    }
    cast = [] if head == "lr" else [("cast", CastTransformer())]
    return Pipeline([("columns", columns), *cast, ("model", models[head])])


def convert_pipeline(pipeline: Pipeline) -> ort.InferenceSession:
    register_converters()
    initial_types = [
        ("order_ts", DoubleTensorType([None, 1])),
        ("amount", DoubleTensorType([None, 1])),
        ("city", StringTensorType([None, 1])),
        ("text", StringTensorType([None, 1])),
        ("image", FloatTensorType([None, IMAGE_VALUES])),
    ]
    options = {id(pipeline.steps[-1][1]): {"zipmap": False}, TfidfVectorizer: {"locale": "C.UTF-8"}}
    return session(to_onnx(pipeline, initial_types=initial_types, options=options, target_opset=OPSET))


def feeds(X: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        "order_ts": to_epoch_seconds(X["order_ts"]).reshape(-1, 1),
        "amount": X[["amount"]].to_numpy(dtype=np.float64),
        "city": X[["city"]].to_numpy(dtype=object),
        "text": X[["text"]].to_numpy(dtype=object),
        "image": np.stack([img.reshape(-1) for img in X["image"]]).astype(np.float32),
    }


@pytest.mark.parametrize("head", ["lr", "hgb", "rf"])
def test_pipeline_graph_matches_sklearn(head: str) -> None:
    rng = np.random.default_rng(7)
    X = make_frame(rng, 300, with_nat=head == "hgb")
    # One OpenMP thread: on a busy 2-core machine HistGradientBoosting's spinning threads
    # took 10 s instead of 0.1 s to fit.
    with threadpool_limits(limits=1, user_api="openmp"):
        pipeline = make_pipeline(head).fit(X, make_labels(X, rng))
        sess = convert_pipeline(pipeline)
        for rows in (X, make_frame(rng, 200, with_nat=head == "hgb")):
            labels, proba = sess.run(None, feeds(rows))
            assert np.abs(proba - pipeline.predict_proba(rows)).max() <= TOLERANCE
            np.testing.assert_array_equal(labels, pipeline.predict(rows))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(st.characters(codec="utf-8"), max_size=40), min_size=1, max_size=8))
def test_text_vectorizer_graph_matches_on_any_unicode(docs: list[str]) -> None:
    vectorizer = make_text_vectorizer().fit([*WORDS, "Hello hello HELLO i x ix stanbul istanbul k", *docs])
    options = {TfidfVectorizer: {"locale": "C.UTF-8"}}
    initial = [("text", StringTensorType([None, 1]))]
    sess = session(to_onnx(vectorizer, initial_types=initial, options=options, target_opset=OPSET))
    probes = [*docs, "İstanbul ıx \u212aelvin HELLO", "café_au_lait 42"]
    actual = sess.run(None, {"text": np.array(probes, dtype=object).reshape(-1, 1)})[0]
    np.testing.assert_allclose(actual, vectorizer.transform(probes).toarray(), rtol=0, atol=1e-6)
