"""Feature transformers that convert to ONNX: timestamps, signed log, image pooling, text.

Each transformer here has a twin converter in ``skewguard.bentos.converters`` that computes the
same arithmetic, operation for operation, inside the ONNX graph, so that a pipeline using
them serves exactly what it was trained on. This module imports no ONNX code.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_feature_names_in, check_array, check_is_fitted, validate_data

from skewguard.bentos.images import IMAGE_SIZE, IMAGE_VALUES
from skewguard.errors import ConfigError, InputError

Float64Array = NDArray[np.float64]

SECONDS_PER_DAY = 86400.0
SECONDS_PER_HOUR = 3600.0
EPOCH_WEEKDAY = 3.0
"""1970-01-01 was a Thursday (Monday = 0)."""
MAX_EPOCH_SECONDS = 2.0**53
"""Beyond this, float64 no longer holds whole seconds exactly; features become NaN."""
HOUR_ANGLE = 2.0 * np.pi / 24.0
DOW_ANGLE = 2.0 * np.pi / 7.0
TRIG_ZERO = 1e-12
"""sin/cos below this are set to exactly 0: cos(6 h) is 6e-17 in numpy and may differ in
sign or size in onnxruntime, and tree thresholds fall between such "zeros"."""
DATETIME_FEATURES = ("hour", "day_of_week", "hour_sin", "hour_cos", "dow_sin", "dow_cos")
MAX_GRID = 8
"""The pooling matrix is dense in the graph: grid 8 is already 3072 × 195 float64 (4.8 MB)."""
TOKEN_PATTERN = r"[a-zA-Z0-9_]+"
"""The ASCII token pattern of ``make_text_vectorizer``."""
_TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def to_epoch_seconds(column: ArrayLike) -> Float64Array:
    """One column of timestamps as float64 UTC epoch seconds; NaT becomes NaN.

    Accepts pandas/numpy datetime64 (tz-aware values are converted to UTC, naive values
    are taken as UTC; floored to whole seconds) or numbers (already epoch seconds, kept
    as they are). Serving code calls this to build the graph's float64 input.
    """
    series = column if isinstance(column, pd.Series) else pd.Series(np.asarray(column))
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    if not pd.api.types.is_datetime64_dtype(series.dtype):
        return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    unit = np.datetime_data(series.dtype)[0]
    ticks = series.to_numpy(dtype=f"datetime64[{unit}]").view(np.int64)
    seconds: Float64Array = (ticks // _TICKS_PER_SECOND[unit]).astype(np.float64)
    seconds[series.isna().to_numpy()] = np.nan
    return seconds


def _as_epoch_table(X: Any) -> Any:
    """``X`` as a 2-D table with datetime columns replaced by epoch seconds."""
    if isinstance(X, pd.Series):
        X = X.to_frame()
    if isinstance(X, pd.DataFrame):
        if not any(pd.api.types.is_datetime64_any_dtype(dtype) for dtype in X.dtypes):
            return X
        return pd.DataFrame({name: to_epoch_seconds(X[name]) for name in X.columns})
    array = np.asarray(X) if not hasattr(X, "toarray") else X
    if getattr(array, "ndim", 2) == 1:
        array = array.reshape(-1, 1)
    if np.issubdtype(array.dtype, np.datetime64):
        return np.column_stack([to_epoch_seconds(array[:, j]) for j in range(array.shape[1])])
    return array


def _compute_datetime_features(seconds: Float64Array) -> Float64Array:
    """Hour, weekday and their sin/cos from epoch seconds, ``(n, k)`` → ``(n, 6k)``.

    Works on whole seconds so that every operation below is exact in float64; the ONNX
    converter repeats the same operations in the same order.
    """
    with np.errstate(invalid="ignore"):
        t = np.where(np.abs(seconds) < MAX_EPOCH_SECONDS, seconds, np.nan)
        whole = np.floor(t)
        days = np.floor(whole / SECONDS_PER_DAY)
        hour = np.floor((whole - days * SECONDS_PER_DAY) / SECONDS_PER_HOUR)
        shifted = days + EPOCH_WEEKDAY
        dow = shifted - np.floor(shifted / 7.0) * 7.0
        hour_angle, dow_angle = hour * HOUR_ANGLE, dow * DOW_ANGLE
        trig = [np.sin(hour_angle), np.cos(hour_angle), np.sin(dow_angle), np.cos(dow_angle)]
        cyclic = np.hstack(trig)
        cyclic = np.where(np.abs(cyclic) < TRIG_ZERO, 0.0, cyclic)
    return np.hstack([hour, dow, cyclic])


class DatetimeFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Hour of day, day of week (Monday = 0) and their cyclic sin/cos encodings, in UTC.

    ``X`` is a timestamp column: a 1-D Series/array or a 2-D single-column frame/array
    of pandas datetime64 (tz-aware → UTC, naive = UTC) or of numeric epoch seconds.
    Several columns are accepted too; the output is then grouped by feature
    (all ``*_hour`` columns first). NaN/NaT gives NaN; infinite values are rejected.
    """

    def fit(self, X: Any, y: object = None) -> DatetimeFeatures:
        """Record the input columns; there is nothing to learn."""
        validate_data(self, _as_epoch_table(X), dtype=np.float64, ensure_all_finite="allow-nan")
        return self

    def transform(self, X: Any) -> Float64Array:
        """Six float64 features per timestamp column (see ``get_feature_names_out``)."""
        check_is_fitted(self)
        seconds = validate_data(
            self, _as_epoch_table(X), dtype=np.float64, ensure_all_finite="allow-nan", reset=False
        )
        return _compute_datetime_features(seconds)

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> NDArray[Any]:
        """``<column>_hour``, ``<column>_day_of_week``, ``<column>_hour_sin`` and so on."""
        check_is_fitted(self)
        columns = _check_feature_names_in(self, input_features)
        names = [f"{column}_{feature}" for feature in DATETIME_FEATURES for column in columns]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class SignedLog1p(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """``sign(x) * log1p(|x|)`` elementwise: compresses heavy tails on both sides of 0.

    Any number of numeric columns; NaN and ±inf pass through (as NaN and ±inf).
    """

    def fit(self, X: Any, y: object = None) -> SignedLog1p:
        """Record the input columns; there is nothing to learn."""
        validate_data(self, X, dtype=np.float64, ensure_all_finite=False)
        return self

    def transform(self, X: Any) -> Float64Array:
        """The signed log of every value, as float64."""
        check_is_fitted(self)
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite=False, reset=False)
        result: Float64Array = np.sign(values) * np.log1p(np.abs(values))
        return result

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def make_pooling_matrix(grid: int) -> Float64Array:
    """``(IMAGE_VALUES, grid*grid*3 + 3)``: cell means per channel, then global means, /255.

    Cell ``(r, c)`` covers rows ``r*32//grid`` up to ``(r+1)*32//grid`` (and the same
    for columns); pixels are flattened in C order, H × W × RGB.
    """
    edges = [i * IMAGE_SIZE // grid for i in range(grid + 1)]
    matrix = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3, grid * grid * 3 + 3))
    for r in range(grid):
        for c in range(grid):
            cell = matrix[edges[r] : edges[r + 1], edges[c] : edges[c + 1]]
            size = cell.shape[0] * cell.shape[1]
            for channel in range(3):
                cell[:, :, channel, (r * grid + c) * 3 + channel] = 1.0 / size
    for channel in range(3):
        matrix[:, :, channel, grid * grid * 3 + channel] = 1.0 / (IMAGE_SIZE * IMAGE_SIZE)
    return matrix.reshape(IMAGE_VALUES, -1) / 255.0


SQUARE_BLOCKS = 4
"""Row blocks of 8 × 32 = 256 pixels: 256 × 255² < 2**24, so block sums of squares are exact."""
SQUARE_SCALE = 1.0 / (IMAGE_SIZE * IMAGE_SIZE * 255.0 * 255.0)


def make_square_blocks() -> Float64Array:
    """``(IMAGE_VALUES, SQUARE_BLOCKS * 3)`` 0/1 matrix summing each channel per row block."""
    rows_per_block = IMAGE_SIZE // SQUARE_BLOCKS
    matrix = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3, SQUARE_BLOCKS * 3))
    for block in range(SQUARE_BLOCKS):
        for channel in range(3):
            rows = slice(block * rows_per_block, (block + 1) * rows_per_block)
            matrix[rows, :, channel, block * 3 + channel] = 1.0
    return matrix.reshape(IMAGE_VALUES, -1)


def _as_pixel_rows(X: Any) -> tuple[Float64Array, str | None, bool]:
    """``(n, IMAGE_VALUES)`` float64 pixels, the column name, and whether X was a column.

    A 1-D column (or list) of images or a 4-D ``(n, 32, 32, 3)`` stack is flattened per
    image; a 2-D array must already hold ``IMAGE_VALUES`` pixel values per row.
    """
    name = X.name if isinstance(X, pd.Series) and isinstance(X.name, str) else None
    label = name or "image"
    is_column = isinstance(X, list | tuple) or getattr(X, "ndim", None) == 1
    if is_column:
        rows = [np.asarray(item) for item in X]
        bad = [i for i, row in enumerate(rows) if row.size != IMAGE_VALUES]
        if bad:
            raise InputError(
                f"Column '{label}': rows {bad[:5]}{' ...' if len(bad) > 5 else ''} do "
                f"not hold a {IMAGE_SIZE}×{IMAGE_SIZE} RGB image ({IMAGE_VALUES} "
                "values); decode images with bentos.images.decode_image first.",
                field=label,
            )
        X = np.stack([row.reshape(-1) for row in rows]) if rows else np.empty((0, 0))
    elif getattr(X, "ndim", None) == 4:
        X = X.reshape(len(X), -1)
    pixels = check_array(X, dtype=np.float64)
    if pixels.shape[1] != IMAGE_VALUES:
        raise InputError(
            f"Column '{label}': expected images or rows of {IMAGE_VALUES} pixel values "
            f"(H×W×RGB flattened), got rows of {pixels.shape[1]} values.",
            field=label,
        )
    return pixels, name, is_column


class ImageFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Colour layout of a 32×32 RGB image: grid-cell means, global means and stds, in [0, 1].

    ``X`` is a 1-D column whose items are ``(32, 32, 3)`` uint8 arrays, or a 2-D array
    of shape ``(n, 3072)`` holding the same pixels flattened (C order, H × W × RGB);
    ``transform`` takes either form. Pooling is one product with the fixed ``pooling_``
    matrix; std is ``sqrt(max(E[x²] - E[x]², 0))``. Wrong sizes raise ``InputError``.
    ``grid`` is 1 to ``MAX_GRID``; cells split 32 pixels as evenly as integers allow.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "grid": [Interval(Integral, 1, MAX_GRID, closed="both")]
    }

    def __init__(self, grid: int = 4) -> None:
        self.grid = grid

    def fit(self, X: Any, y: object = None) -> ImageFeatures:
        """Build the pooling matrix and record the input column."""
        self._validate_params()
        _, name, is_column = _as_pixel_rows(X)
        if name is not None:
            self.feature_names_in_ = np.asarray([name], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_features_in_ = 1 if is_column else IMAGE_VALUES
        scaled = make_pooling_matrix(self.grid)
        self.pooling_ = (scaled > 0).astype(np.float64)
        self.scales_ = scaled.max(axis=0)
        self.square_blocks_ = make_square_blocks()
        self.block_totals_ = np.tile(np.eye(3), (SQUARE_BLOCKS, 1))
        return self

    def transform(self, X: Any) -> Float64Array:
        """``grid*grid*3`` cell means, 3 channel means and 3 channel stds per image.

        Every sum is a sum of whole pixel values (or their squares, in blocks of 256
        pixels) below 2**24, so it is exact in float32 too: the graph computes the sums
        with float32 MatMuls — four times faster than float64 ones — and gets the same
        numbers bit for bit before scaling in float64 as here.
        """
        check_is_fitted(self)
        pixels, _, _ = _as_pixel_rows(X)
        pooled: Float64Array = (pixels @ self.pooling_) * self.scales_
        block_sums = (pixels * pixels) @ self.square_blocks_
        second = (block_sums @ self.block_totals_) * SQUARE_SCALE
        means = pooled[:, -3:]
        stds = np.sqrt(np.maximum(second - means * means, 0.0))
        return np.hstack([pooled, stds])

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> NDArray[Any]:
        """``<col>_cell<r>_<c>_<r|g|b>``, then ``<col>_mean_<ch>``, ``<col>_std_<ch>``."""
        check_is_fitted(self)
        given = [] if input_features is None else list(np.asarray(input_features))
        known = list(getattr(self, "feature_names_in_", ["image"]))
        column = str(given[0] if len(given) == 1 else known[0])
        cells = [f"cell{r}_{c}" for r in range(self.grid) for c in range(self.grid)]
        names = [f"{column}_{stem}_{ch}" for stem in [*cells, "mean"] for ch in "rgb"]
        names += [f"{column}_std_{ch}" for ch in "rgb"]
        return np.asarray(names, dtype=object)


_UNSAFE_TEXT_OPTIONS = {
    "analyzer": "word",
    "strip_accents": None,
    "preprocessor": None,
    "tokenizer": None,
    "token_pattern": TOKEN_PATTERN,
    "stop_words": None,
    "lowercase": False,
}


def make_text_vectorizer(**overrides: Any) -> TfidfVectorizer:
    """A ``TfidfVectorizer`` with ASCII tokens and no lowercasing: "Hello" and "hello" are two tokens.

    Tokens are ASCII runs ``[a-zA-Z0-9_]+``, analyzer ``"word"``, no accent stripping, no
    stop words, no lowercasing. Every ``TfidfVectorizer`` with the default token pattern and
    lowercasing converts exactly as well (``skewguard.bentos.text``); this one keeps the
    token set small and case-sensitive. Other options (``ngram_range``, ``min_df``,
    ``max_features``, ``sublinear_tf``, ...) may be overridden; changing the settings above
    raises ``ConfigError`` (build a ``TfidfVectorizer`` yourself instead).
    """
    unsafe = sorted(
        key
        for key, value in overrides.items()
        if key in _UNSAFE_TEXT_OPTIONS and value != _UNSAFE_TEXT_OPTIONS[key]
    )
    if unsafe:
        raise ConfigError(
            f"make_text_vectorizer: {', '.join(unsafe)} cannot be changed here; keep these "
            "settings, or build a TfidfVectorizer yourself (its defaults convert exactly)."
        )
    params: dict[str, Any] = {**_UNSAFE_TEXT_OPTIONS, **overrides}
    return TfidfVectorizer(**params)
