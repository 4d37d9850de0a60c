"""The feature transformers behave as scikit-learn estimators and compute the documented values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.utils.estimator_checks import parametrize_with_checks

from skewguard.bentos.images import IMAGE_SIZE, IMAGE_VALUES
from skewguard.bentos.transforms import (
    DATETIME_FEATURES,
    DatetimeFeatures,
    ImageFeatures,
    SignedLog1p,
    make_pooling_matrix,
    make_text_vectorizer,
    to_epoch_seconds,
)
from skewguard.errors import ConfigError, InputError

ONE_D = "accepts a 1-D column of timestamps by design (a named Series from a ColumnTransformer)"
FIXED_WIDTH = f"input must hold {IMAGE_VALUES} pixel values per row; the check's data has a few columns"
IMAGE_WIDTH_CHECKS = (
    "check_fit_score_takes_y",
    "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self",
    "check_readonly_memmap_input",
    "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit",
    "check_estimators_dtypes",
    "check_dtype_object",
    "check_pipeline_consistency",
    "check_estimators_nan_inf",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
    "check_transformer_preserve_dtypes",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_fit2d_1sample",
    "check_fit2d_1feature",
    "check_dict_unchanged",
    "check_fit_idempotent",
    "check_fit_check_is_fitted",
    "check_n_features_in",
    "check_fit1d",
    "check_fit2d_predict1d",
)


def expected_failed_checks(estimator: BaseEstimator) -> dict[str, str]:
    if isinstance(estimator, DatetimeFeatures):
        return {"check_fit1d": ONE_D, "check_fit2d_predict1d": ONE_D}
    if isinstance(estimator, ImageFeatures):
        return dict.fromkeys(IMAGE_WIDTH_CHECKS, FIXED_WIDTH)
    return {}


@parametrize_with_checks(
    [DatetimeFeatures(), SignedLog1p(), ImageFeatures()],
    expected_failed_checks=expected_failed_checks,
    xfail_strict=True,
)
def test_sklearn_compatible(estimator: BaseEstimator, check: Any) -> None:
    check(estimator)


def features(frame: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip(DATETIME_FEATURES, frame.T, strict=True))


def test_last_second_of_a_monday_is_hour_23_day_0() -> None:
    ts = pd.Series(pd.to_datetime(["2026-03-02 23:59:59", "2026-03-03 00:00:00"]), name="order_ts")
    out = features(DatetimeFeatures().fit_transform(ts))
    assert out["hour"].tolist() == [23.0, 0.0]
    assert out["day_of_week"].tolist() == [0.0, 1.0]
    assert out["hour_sin"][1] == 0.0
    assert out["hour_cos"][1] == 1.0
    np.testing.assert_allclose(out["dow_sin"], np.sin(2 * np.pi * np.array([0, 1]) / 7))


def test_cyclic_zeros_are_exact_zeros() -> None:
    seconds = 3600.0 * np.array([[0], [6], [12], [18]])
    out = features(DatetimeFeatures().fit_transform(seconds))
    assert out["hour_sin"].tolist() == [0.0, 1.0, 0.0, -1.0]
    assert out["hour_cos"].tolist() == [1.0, 0.0, -1.0, 0.0]


def test_tz_aware_timestamps_are_converted_to_utc() -> None:
    local = pd.Series(pd.to_datetime(["2026-03-02 23:30:00-05:00"]), name="order_ts")
    naive = pd.Series(pd.to_datetime(["2026-03-03 04:30:00"]), name="order_ts")
    transformer = DatetimeFeatures().fit(local)
    np.testing.assert_array_equal(transformer.transform(local), transformer.transform(naive))
    assert features(transformer.transform(local))["hour"].tolist() == [4.0]  # Tuesday 04:30 UTC


def test_epoch_seconds_frames_and_arrays_give_the_same_features() -> None:
    ts = pd.Series(pd.to_datetime(["1969-12-31 23:00:00", "1970-01-01 00:00:00", "2024-02-29 12:00:01"]))
    seconds = to_epoch_seconds(ts)
    assert seconds.tolist() == [-3600.0, 0.0, 1709208001.0]
    expected = DatetimeFeatures().fit_transform(ts)
    for form in (seconds, seconds.reshape(-1, 1), ts.to_frame("when"), ts.to_numpy()):
        np.testing.assert_array_equal(DatetimeFeatures().fit_transform(form), expected)
    assert features(expected)["day_of_week"].tolist() == [2.0, 3.0, 3.0]  # Wed, Thu, Thu


def test_missing_and_out_of_range_timestamps_give_nan() -> None:
    ts = pd.Series(pd.to_datetime(["2026-03-02 10:00", None]), name="order_ts")
    out = DatetimeFeatures().fit_transform(ts)
    assert not np.isnan(out[0]).any()
    assert np.isnan(out[1]).all()
    assert np.isnan(DatetimeFeatures().fit_transform(np.array([[2.0**60]]))).all()
    with pytest.raises(ValueError, match="infinity"):
        DatetimeFeatures().fit_transform(np.array([[np.inf]]))


def test_datetime_feature_names_follow_the_column() -> None:
    ts = pd.Series(pd.to_datetime(["2026-03-02"]), name="order_ts")
    names = DatetimeFeatures().fit(ts).get_feature_names_out().tolist()
    assert names == [f"order_ts_{feature}" for feature in DATETIME_FEATURES]
    frame = pd.DataFrame({"order_ts": ts, "note": ["x"]})
    columns = ColumnTransformer([("time", DatetimeFeatures(), "order_ts")]).fit(frame)
    assert columns.get_feature_names_out()[0] == "time__order_ts_hour"


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    offset_minutes=st.integers(-14 * 60, 14 * 60),
)
def test_hour_and_weekday_match_python_datetime(moment: datetime, offset_minutes: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    ts = pd.Series([pd.Timestamp(aware)])
    out = features(DatetimeFeatures().fit_transform(ts))
    utc = aware.astimezone(UTC)
    assert (out["hour"][0], out["day_of_week"][0]) == (utc.hour, utc.weekday())


def test_signed_log_is_odd_and_keeps_nan_and_inf() -> None:
    X = np.array([[0.0, 1.0, -1.0, np.e - 1, -1e300, np.nan, np.inf, -np.inf]])
    out = SignedLog1p().fit_transform(X)[0]
    np.testing.assert_allclose(out[:5], [0.0, np.log(2), -np.log(2), 1.0, -np.log1p(1e300)])
    assert np.isnan(out[5])
    assert out[6:].tolist() == [np.inf, -np.inf]


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_signed_log_is_monotonic_and_symmetric(values: list[float]) -> None:
    X = np.sort(np.array(values)).reshape(-1, 1)
    out = SignedLog1p().fit_transform(X)[:, 0]
    assert np.all(np.diff(out) >= 0)
    np.testing.assert_array_equal(SignedLog1p().fit_transform(-X)[:, 0], -out)


def test_signed_log_names_its_columns_one_to_one() -> None:
    frame = pd.DataFrame({"amount": [1.0], "refund": [-2.0]})
    assert SignedLog1p().fit(frame).get_feature_names_out().tolist() == ["amount", "refund"]


def image(value: int | np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.uint8), (IMAGE_SIZE, IMAGE_SIZE, 3)).copy()


def reference_image_features(img: np.ndarray, grid: int) -> np.ndarray:
    """Straightforward per-cell loops, independent of the pooling matrix."""
    edges = [i * IMAGE_SIZE // grid for i in range(grid + 1)]
    pixels = img.astype(np.float64) / 255.0
    cells = [
        pixels[edges[r] : edges[r + 1], edges[c] : edges[c + 1]].mean(axis=(0, 1))
        for r in range(grid)
        for c in range(grid)
    ]
    return np.concatenate([*cells, pixels.mean(axis=(0, 1)), pixels.std(axis=(0, 1))])


def test_black_white_and_noise_images() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    images = pd.Series([image(0), image(255), noise], name="photo")
    out = ImageFeatures().fit_transform(images)
    assert out.shape == (3, 4 * 4 * 3 + 6)
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_allclose(out[1, :-3], 1.0, atol=1e-12)
    np.testing.assert_allclose(out[1, -3:], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[2, -6:-3], 0.5, atol=0.02)
    np.testing.assert_allclose(out[2, -3:], np.sqrt((256**2 - 1) / 12) / 255, atol=0.02)
    np.testing.assert_allclose(out[2], reference_image_features(noise, 4), atol=1e-12)


@pytest.mark.parametrize("grid", [1, 3, 4, 8])
def test_pooling_matches_cell_loops_for_any_grid(grid: int) -> None:
    img = np.random.default_rng(grid).integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    halves = image(0)
    halves[:, IMAGE_SIZE // 2 :] = 255
    out = ImageFeatures(grid=grid).fit_transform(pd.Series([img, halves]))
    np.testing.assert_allclose(out[0], reference_image_features(img, grid), atol=1e-12)
    np.testing.assert_allclose(out[1, -3:], 0.5, atol=1e-12)
    assert make_pooling_matrix(grid).shape == (IMAGE_VALUES, grid * grid * 3 + 3)


def test_image_column_stack_and_flat_rows_agree() -> None:
    imgs = np.random.default_rng(1).integers(0, 256, (5, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    transformer = ImageFeatures(grid=2).fit(pd.Series(list(imgs), name="image"))
    expected = transformer.transform(pd.Series(list(imgs)))
    np.testing.assert_array_equal(transformer.transform(imgs.reshape(5, -1)), expected)
    np.testing.assert_array_equal(transformer.transform(imgs), expected)
    names = transformer.get_feature_names_out()
    assert len(names) == expected.shape[1]
    assert names[0] == "image_cell0_0_r"
    assert names[-1] == "image_std_b"


def test_wrong_image_size_names_the_column() -> None:
    images = pd.Series([image(0), np.zeros((16, 16, 3), dtype=np.uint8)], name="photo")
    with pytest.raises(InputError, match=r"'photo'.*rows \[1\]") as raised:
        ImageFeatures().fit(images)
    assert raised.value.field == "photo"
    with pytest.raises(InputError, match="3072"):
        ImageFeatures().fit(np.zeros((2, 100)))


@pytest.mark.parametrize("grid", [0, 9])
def test_image_grid_is_validated(grid: int) -> None:
    with pytest.raises(ValueError, match="grid"):
        ImageFeatures(grid=grid).fit(np.zeros((1, IMAGE_VALUES)))


def test_text_vectorizer_defaults_tokenize_ascii_case_sensitive() -> None:
    vectorizer = make_text_vectorizer(min_df=1)
    assert isinstance(vectorizer, TfidfVectorizer)
    vectorizer.fit(["Café naïve İstanbul foo_bar 42"])
    assert sorted(vectorizer.vocabulary_) == ["42", "Caf", "foo_bar", "na", "stanbul", "ve"]


@pytest.mark.parametrize(
    "override",
    [{"lowercase": True}, {"stop_words": ["the"]}, {"strip_accents": "unicode"}, {"analyzer": "char_wb"}],
)
def test_text_vectorizer_refuses_options_that_tokenize_differently(override: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(override))):
        make_text_vectorizer(**override)
