"""Monitoring frames: prediction-log records and the training reference as one flat table.

Both sides get exactly the same columns, each with a declared kind (numeric, categorical
or text) derived from the cascade's input spec:

- request fields and online features as they are;
- a timestamp field as its hour of day, UTC (``order_ts_hour``) — the raw time always
  "drifts", the hour is what the model reads;
- an image field as the brightness and contrast of its decoded 32×32 pixels
  (``image_brightness``, ``image_contrast``: mean and standard deviation of the 0–255
  values, the statistics the gateway logs and the training profile holds);
- the cascade's outputs: ``prediction`` (a category for a classifier, a number for a
  regressor), a classifier's probabilities (``proba_<class>``: the positive class's of two,
  each class's of more) and ``route``.

A value one side lacks becomes a missing value, never an error: the drift job reports a
column without data instead of failing on it. The training set has labels, not outputs;
pass the cascade's outputs on the reference rows (``skewguard.monitoring.replay``) or leave them out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from skewguard.bentos.images import decode_image, pixel_stats
from skewguard.bentos.spec import InputSpec
from skewguard.errors import ConfigError

ColumnKind = Literal["numeric", "categorical", "text"]
Derivation = Literal["value", "hour", "brightness", "contrast", "prediction", "proba", "route"]
PREDICTION, ROUTE = "prediction", "route"
MAX_PROBA_COLUMNS = 10
MAX_REFERENCE_ROWS = 5_000
"""Reference rows the drift job compares with: beyond that a sample (the runtime grows with it)."""

_OUTPUTS: tuple[Derivation, ...] = ("prediction", "proba", "route")


@dataclass(frozen=True, slots=True)
class Column:
    """One monitored column: its kind, and where its values come from."""

    name: str
    kind: ColumnKind
    source: str
    """The spec field it is derived from; for ``proba``, the class whose probability it is."""
    derive: Derivation = "value"


@dataclass(frozen=True, slots=True)
class ColumnSet:
    """The monitored columns, in order; both frames have exactly these."""

    columns: tuple[Column, ...]

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def get(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def without(self, names: Sequence[str]) -> ColumnSet:
        return ColumnSet(tuple(c for c in self.columns if c.name not in names))


@dataclass(frozen=True, slots=True)
class Outputs:
    """The cascade's answer per row, as the prediction log records it."""

    prediction: tuple[Any, ...]
    probabilities: tuple[Mapping[str, float] | None, ...]
    """Per row, a classifier's ``{class: probability}``; None from a regressor."""
    route: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.route)


def monitored_columns(
    spec: InputSpec,
    *,
    outputs: bool = True,
    task: Literal["classification", "regression"] = "classification",
    classes: Sequence[str] = ("0", "1"),
) -> ColumnSet:
    """The columns to monitor for a cascade with the (union) input ``spec``.

    ``classes`` are a classifier's classes in the order its probabilities come: of two, the
    second's probability is monitored; of more, each one's (up to ``MAX_PROBA_COLUMNS``).
    """
    columns: list[Column] = []
    for field in spec:
        if field.kind in ("numeric", "categorical", "text"):
            columns.append(Column(field.name, field.kind, field.name))
        elif field.kind == "datetime":
            columns.append(Column(f"{field.name}_hour", "numeric", field.name, "hour"))
        else:  # image
            columns.append(Column(f"{field.name}_brightness", "numeric", field.name, "brightness"))
            columns.append(Column(f"{field.name}_contrast", "numeric", field.name, "contrast"))
    if outputs:
        kind: ColumnKind = "numeric" if task == "regression" else "categorical"
        columns.append(Column(PREDICTION, kind, PREDICTION, "prediction"))
        if task == "classification":
            watched = list(classes)[-1:] if len(classes) == 2 else list(classes)[:MAX_PROBA_COLUMNS]
            columns += [Column(f"proba_{c}", "numeric", c, "proba") for c in watched]
        columns.append(Column(ROUTE, "categorical", ROUTE, "route"))
    return ColumnSet(tuple(columns))


def current_frame(records: Sequence[Mapping[str, Any]], columns: ColumnSet) -> pd.DataFrame:
    """Prediction-log records (``skewguard.predictionlog.records.read_records``) as monitored columns."""
    raw: dict[str, list[Any]] = {column.name: [] for column in columns}
    for record in records:
        fields = record.get("fields") or {}
        online = record.get("online_features") or {}
        for column in columns:
            raw[column.name].append(_from_record(column, record, fields, online))
    data = {c.name: _hours(raw[c.name]) if c.derive == "hour" else raw[c.name] for c in columns}
    return _typed(data, columns, len(records))


def _from_record(
    column: Column, record: Mapping[str, Any], fields: Mapping[str, Any], online: Mapping[str, Any]
) -> Any:
    derive, source = column.derive, column.source
    if derive in ("value", "hour"):
        return fields[source] if source in fields else online.get(source)
    if derive in ("brightness", "contrast"):
        summary = fields.get(source)
        return summary.get(derive) if isinstance(summary, Mapping) else None
    if derive == "proba":
        return (record.get("probabilities") or {}).get(source)
    return record.get(derive)  # prediction, route


def reference_frame(
    training: pd.DataFrame, columns: ColumnSet, outputs: Outputs | None = None
) -> pd.DataFrame:
    """Training rows as monitored columns; output columns stay empty without ``outputs``.

    Images may be encoded bytes (the training-set parquet) or decoded arrays.
    """
    if outputs is not None and len(outputs) != len(training):
        raise ConfigError(
            f"The cascade outputs cover {len(outputs)} rows but the reference has {len(training)}; "
            "replay the cascade on exactly the reference rows."
        )
    images: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
    data: dict[str, Any] = {}
    for column in columns:
        source, derive = column.source, column.derive
        if derive in _OUTPUTS:
            data[column.name] = (
                _output_values(column, outputs) if outputs is not None else [None] * len(training)
            )
        elif source not in training.columns:
            data[column.name] = [None] * len(training)
        elif derive == "hour":
            data[column.name] = _hours(training[source])
        elif derive in ("brightness", "contrast"):
            if source not in images:
                images[source] = _image_stats(training[source])
            data[column.name] = images[source][0 if derive == "brightness" else 1]
        else:
            data[column.name] = training[source].to_numpy()
    return _typed(data, columns, len(training))


def _output_values(column: Column, outputs: Outputs) -> list[Any]:
    if column.derive == "proba":
        return [p.get(column.source) if p is not None else None for p in outputs.probabilities]
    return list(outputs.prediction if column.derive == "prediction" else outputs.route)


def reference_rows(
    training: pd.DataFrame,
    time_field: str | None,
    *,
    holdout: float = 0.2,
    max_rows: int = MAX_REFERENCE_ROWS,
    seed: int = 0,
) -> pd.DataFrame:
    """The rows the models were fitted on: the oldest ``1 - holdout`` share by ``time_field``, as
    training splits them, then at most ``max_rows`` of them drawn with ``seed`` (in time order)."""
    if not 0.0 <= holdout < 1.0 or max_rows < 1:
        raise ConfigError(
            f"reference_rows got holdout={holdout}, max_rows={max_rows}; expected [0, 1) and >= 1."
        )
    rows = training
    if time_field is not None:
        rows = training.sort_values(time_field, kind="stable").reset_index(drop=True)
        rows = rows.iloc[: int(len(rows) * (1 - holdout))]
    if len(rows) > max_rows:
        rows = rows.sample(n=max_rows, random_state=seed).sort_index()
    return rows.reset_index(drop=True)


def _hours(values: Sequence[Any] | pd.Series) -> NDArray[np.float64]:
    """Hour of day (UTC) of ISO-8601 strings, datetimes or epoch seconds; NaN when unreadable."""
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if pd.api.types.is_datetime64_any_dtype(series):
        moments = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
        return np.asarray(moments.dt.hour.astype("float64").to_numpy(), dtype=np.float64)
    hours = np.full(len(series), np.nan)
    is_number = series.map(_is_number).to_numpy(dtype=bool)
    seconds = np.array([_epoch_seconds(v) for v in series[is_number]], dtype=np.float64)
    hours[is_number] = np.floor(np.mod(seconds, 86_400) / 3_600)  # UTC; NaN stays NaN
    is_text = ~is_number & series.notna().to_numpy(dtype=bool)
    if is_text.any():
        moments = pd.to_datetime(series[is_text], utc=True, errors="coerce", format="ISO8601")
        hours[is_text] = moments.dt.hour.astype("float64").to_numpy()
    return hours


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _epoch_seconds(value: Any) -> float:
    """Epoch seconds within ±3,000 years of 1970, else NaN (no overflow, no warning)."""
    try:
        seconds = float(value)
    except OverflowError:
        return math.nan
    return seconds if abs(seconds) < 1e11 else math.nan


def _image_stats(images: pd.Series) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Brightness and contrast per image (``bentos.images.pixel_stats``, as the log records them)."""
    brightness = np.full(len(images), np.nan)
    contrast = np.full(len(images), np.nan)
    for i, image in enumerate(images):
        if isinstance(image, bytes | bytearray):
            pixels: NDArray[Any] = decode_image(bytes(image))
        elif isinstance(image, np.ndarray):
            pixels = image
        else:
            continue
        brightness[i], contrast[i] = pixel_stats(pixels)
    return brightness, contrast


def _typed(data: Mapping[str, Any], columns: ColumnSet, n_rows: int) -> pd.DataFrame:
    """float64 for numeric columns; str (or None) for categorical and text ones."""
    typed: dict[str, Any] = {}
    for column in columns:
        values = data[column.name]
        if column.kind == "numeric":
            array = np.asarray(values) if isinstance(values, np.ndarray | pd.Series) else None
            if array is not None and array.dtype.kind in "biuf":
                typed[column.name] = array.astype(np.float64)
            else:
                typed[column.name] = np.array([_number(v) for v in values], dtype=np.float64)
        else:
            typed[column.name] = np.array([_text(v) for v in values], dtype=object)
    return pd.DataFrame(typed, index=pd.RangeIndex(n_rows))


def _number(value: Any) -> float:
    """A float, or NaN for anything that is not a number (text, None, a huge int)."""
    if value is None or isinstance(value, Mapping | list | tuple):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _text(value: Any) -> str | None:
    """The category or text as a string; a whole float as an int, so 1.0 (parquet) matches 1 (JSON)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)
