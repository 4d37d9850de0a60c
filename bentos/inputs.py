"""Raw rows → validated columns: the one place where client values become model inputs.

A ``Batch`` holds the canonical columns of N rows. ``to_feeds`` gives the ONNX graph's
inputs and ``to_frame`` the pandas frame a scikit-learn pipeline takes, so the parity gate
compares both on exactly the same values. Numbers and timestamps stay float64 (epoch
seconds, UTC); a missing string becomes ``""``; images are decoded by ``skewguard.bentos.images``.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from skewguard.bentos.images import (
    IMAGE_SIZE,
    IMAGE_VALUES,
    MAX_REQUEST_PIXELS,
    OpenedImage,
    PixelBudget,
    base64_bytes,
    open_image,
)
from skewguard.bentos.spec import FieldSpec, InputSpec
from skewguard.errors import InputError, PayloadTooLargeError

MAX_TEXT_CHARS = 10_000
MAX_CATEGORY_CHARS = 256
MAX_EPOCH_SECONDS = 2**53 - 1
"""Epoch seconds beyond ± this are not whole seconds in float64: the graph's time features are NaN
there (``skewguard.bentos.transforms.MAX_EPOCH_SECONDS``), and so would the probabilities be."""
_TIME_RANGE = f"{pd.Timestamp.min.isoformat()} to {pd.Timestamp.max.isoformat()}"
"""ISO-8601 timestamps pandas (which trains the models) can hold: years 1677 to 2262."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST_MOMENT = pd.Timestamp.min.ceil("us").to_pydatetime().replace(tzinfo=UTC)
_LAST_MOMENT = pd.Timestamp.max.floor("us").to_pydatetime().replace(tzinfo=UTC)
"""The first and last whole microseconds pandas can hold: a ``datetime`` between them is in range."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Validated columns of N rows, keyed by field name, shaped for the ONNX graph."""

    spec: InputSpec
    columns: Mapping[str, NDArray[Any]]

    def __len__(self) -> int:
        first = next(iter(self.columns.values()), None)
        return 0 if first is None else len(first)

    def to_feeds(self) -> dict[str, NDArray[Any]]:
        """Inputs for ``InferenceSession.run``."""
        return dict(self.columns)

    def to_frame(self) -> pd.DataFrame:
        """The same values as a frame in the types the pipeline was trained on."""
        data: dict[str, Any] = {}
        for spec in self.spec:
            column = self.columns[spec.name]
            if spec.kind == "datetime":
                data[spec.name] = pd.to_datetime(column[:, 0], unit="s", utc=True)
            elif spec.kind == "image":
                pixels = column.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 3)
                data[spec.name] = pd.Series(list(pixels), dtype=object)
            else:
                data[spec.name] = column[:, 0]
        return pd.DataFrame(data)

    def take(self, index: NDArray[np.intp]) -> Batch:
        """The rows at ``index``, as a new batch."""
        return Batch(self.spec, {k: v[index] for k, v in self.columns.items()})

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start`` to ``stop`` (views of these columns, not copies)."""
        return Batch(self.spec, {k: v[start:stop] for k, v in self.columns.items()})


def encode_rows(
    spec: InputSpec,
    rows: Sequence[Mapping[str, Any]],
    *,
    allowed_extra: Sequence[str] = (),
    max_pixels: int = MAX_REQUEST_PIXELS,
) -> Batch:
    """Validate JSON-like rows against ``spec``; raise ``InputError`` naming the field.

    Images are decoded within ``max_pixels`` for all rows together (``PixelBudget``).
    """
    return prepare_rows(spec, rows, allowed_extra=allowed_extra, max_pixels=max_pixels).finish()


@dataclass(frozen=True, slots=True)
class Values:
    """Validated rows as one list of model-ready values per field (images decoded to pixels).

    What a ``Batch`` holds, before the arrays: ``stack`` turns the values of several requests
    into one batch with one array per field, so rows gathered from many requests cost one
    array each rather than one per request and another to join them.
    """

    spec: InputSpec
    columns: Mapping[str, list[Any]]

    def __len__(self) -> int:
        first = next(iter(self.columns.values()), None)
        return 0 if first is None else len(first)


def stack(parts: Sequence[Values]) -> Batch:
    """One batch of every part's rows, in order (the parts share one spec)."""
    spec = parts[0].spec
    if len(parts) == 1:
        columns = parts[0].columns
    else:
        columns = {f.name: [value for part in parts for value in part.columns[f.name]] for f in spec}
    return Batch(spec, {f.name: _to_array(f, columns[f.name]) for f in spec})


@dataclass(frozen=True, slots=True)
class PreparedRows:
    """Rows validated, every field's values converted but the images', whose headers are read and checked.

    ``pixels`` is what decoding them will cost; ``values()`` and ``finish()`` decode them
    (Pillow releases the GIL while it does, so a server may call them in a worker thread).
    """

    spec: InputSpec
    columns: Mapping[str, list[Any]]
    images: Mapping[str, list[OpenedImage | NDArray[Any]]]
    pixels: int

    def values(self) -> Values:
        """The rows' values, with every image decoded."""
        decoded = {name: [_pixels(image) for image in opened] for name, opened in self.images.items()}
        columns = {**self.columns, **decoded}
        return Values(self.spec, {f.name: columns[f.name] for f in self.spec})

    def finish(self) -> Batch:
        """The batch, with every image decoded."""
        return stack([self.values()])


def prepare_rows(
    spec: InputSpec,
    rows: Sequence[Mapping[str, Any]],
    *,
    allowed_extra: Sequence[str] = (),
    max_pixels: int = MAX_REQUEST_PIXELS,
) -> PreparedRows:
    """Everything ``encode_rows`` checks, and the image headers against one ``PixelBudget``.

    What is refused here costs no decoding: a request whose images add up to more than
    ``max_pixels`` is a ``PayloadTooLargeError`` naming the image field.
    """
    if not rows:
        raise InputError("Expected at least one row, got none.", field="rows")
    known = set(spec.names) | set(allowed_extra)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InputError(
                f"Row {i}: expected an object of fields, got {type(row).__name__}.", field="rows"
            )
        extra = sorted(set(row) - known)
        if extra:
            raise InputError(
                f"Row {i}: unexpected field {extra[0]!r}; expected only {', '.join(sorted(known))}.",
                field=str(extra[0]),
            )
    budget = PixelBudget(max_pixels)
    columns, images = {}, {}
    for f in spec:
        values = [_value(row, f, i) for i, row in enumerate(rows)]
        if f.kind == "image":
            images[f.name] = _open_images(f, values, budget)
        else:
            columns[f.name] = _convert(f, values)
    return PreparedRows(spec, columns, images, budget.spent)


def _open_images(spec: FieldSpec, values: list[Any], budget: PixelBudget) -> list[OpenedImage | NDArray[Any]]:
    _check_nulls(spec, values)
    opened = []
    for i, value in enumerate(values):
        image = _open_image(spec, value)
        if isinstance(image, OpenedImage):
            budget.charge(image.pixels, field=spec.name, row=i)
        opened.append(image)
    return opened


def _pixels(image: OpenedImage | NDArray[Any]) -> NDArray[np.uint8]:
    """An image's ``IMAGE_VALUES`` pixel values, decoded now if it was not."""
    decoded = image.decode() if isinstance(image, OpenedImage) else image
    return np.asarray(decoded, dtype=np.uint8).reshape(IMAGE_VALUES)


def encode_frame(spec: InputSpec, X: pd.DataFrame) -> Batch:
    """Canonical columns from a training-style frame (images as arrays or encoded bytes)."""
    missing = [name for name in spec.names if name not in X.columns]
    if missing:
        raise InputError(f"The frame lacks the fields {', '.join(missing)}.", field=missing[0])
    columns = {}
    for f in spec:
        values = X[f.name]
        if f.kind == "datetime" and pd.api.types.is_datetime64_any_dtype(values):
            seconds = _datetime_seconds(values)
            columns[f.name] = seconds.reshape(-1, 1)
        else:
            columns[f.name] = _encode_column(f, [_null_to_none(v) for v in values])
    return Batch(spec, columns)


def _datetime_seconds(values: pd.Series) -> NDArray[np.float64]:
    utc = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
    nanos = utc.astype("int64").to_numpy()
    seconds = (nanos // 1_000_000_000).astype(np.float64) + (nanos % 1_000_000_000) / 1e9
    seconds[utc.isna().to_numpy()] = np.nan
    return np.asarray(seconds, dtype=np.float64)


def _null_to_none(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _value(row: Mapping[str, Any], spec: FieldSpec, i: int) -> Any:
    if spec.name not in row:
        raise InputError(f"Row {i}: the field {spec.name!r} ({spec.kind}) is missing.", field=spec.name)
    return row[spec.name]


def _check_nulls(spec: FieldSpec, values: list[Any]) -> None:
    if not spec.nullable:
        for i, value in enumerate(values):
            if value is None:
                raise InputError(
                    f"Row {i}: the field {spec.name!r} may not be null; send a {spec.kind} value.",
                    field=spec.name,
                )


def _encode_column(spec: FieldSpec, values: list[Any]) -> NDArray[Any]:
    if spec.kind == "image":  # a training frame: no request, so no pixel budget
        _check_nulls(spec, values)
        return _to_array(spec, [_pixels(_open_image(spec, v)) for v in values])
    return _to_array(spec, _convert(spec, values))


def _convert(spec: FieldSpec, values: list[Any]) -> list[Any]:
    """A non-image field's values, checked and converted: floats, or strings."""
    _check_nulls(spec, values)
    encoder = _ENCODERS[spec.kind]
    return [encoder(spec, v) for v in values]


def _to_array(spec: FieldSpec, values: list[Any]) -> NDArray[Any]:
    """A field's converted values as the graph's input column."""
    if spec.kind in ("numeric", "datetime"):
        return np.asarray(values, dtype=np.float64).reshape(-1, 1)
    if spec.kind == "image":
        return np.stack(values).astype(np.float32)
    return np.array(values, dtype=object)[:, None]  # ~0.4 µs less than .reshape(-1, 1) on object arrays


def _number(spec: FieldSpec, value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputError(
            f"Field {spec.name!r}: expected a number, got {type(value).__name__} {_short(value)}.",
            field=spec.name,
        )
    try:
        number = float(value)
    except OverflowError as exc:  # an integer past float64: a parser other than the gateway's let it in
        raise InputError(
            f"Field {spec.name!r}: the integer {_short(value)} is out of range; numbers must fit a "
            "float64 (within ±1.8e308).",
            field=spec.name,
        ) from exc
    if not math.isfinite(number):
        raise InputError(
            f"Field {spec.name!r}: expected a finite number or null, got {number}.", field=spec.name
        )
    return number


def _string(spec: FieldSpec, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(
            f"Field {spec.name!r}: expected a string, got {type(value).__name__} {_short(value)}.",
            field=spec.name,
        )
    limit = MAX_TEXT_CHARS if spec.kind == "text" else MAX_CATEGORY_CHARS
    if len(value) > limit:
        raise PayloadTooLargeError(
            f"Field {spec.name!r}: the string has {len(value)} characters; at most {limit} are accepted.",
            field=spec.name,
        )
    if not value.isascii():
        try:  # JSON's \ud800 escape parses to a lone surrogate, which the graph's UTF-8 strings cannot hold
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"Field {spec.name!r}: character {exc.start} is a lone UTF-16 surrogate, not text; "
                "send valid Unicode (a surrogate pair or the character itself).",
                field=spec.name,
            ) from exc
    return value


def epoch_seconds(spec: FieldSpec, value: Any) -> float:
    """A datetime field's value (ISO-8601 text, epoch seconds, datetime) as the graph reads it:
    UTC epoch seconds; NaN for null. Raises ``InputError`` naming the field, as encoding would."""
    return _timestamp(spec, value)


def _timestamp(spec: FieldSpec, value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, pd.Timestamp | datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return _seconds(spec, moment)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InputError(
                f"Field {spec.name!r}: expected an ISO-8601 timestamp such as "
                f"'2026-03-01T14:30:00Z' or epoch seconds, got {_short(value)}.",
                field=spec.name,
            ) from exc
        if not any(separator in value for separator in "Tt "):  # Python reads a bare date as midnight
            raise InputError(
                f"Field {spec.name!r}: {_short(value)} is a date without a time; send a date-time "
                "such as '2026-03-01T14:30:00Z' (RFC 3339, as the OpenAPI schema says) or epoch seconds.",
                field=spec.name,
            )
        return _seconds(spec, moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    seconds = _number(spec, value)
    if abs(seconds) > MAX_EPOCH_SECONDS:
        raise InputError(
            f"Field {spec.name!r}: {seconds:g} epoch seconds is outside the supported range "
            f"±{MAX_EPOCH_SECONDS} (±2**53 - 1); send seconds, or an ISO-8601 timestamp.",
            field=spec.name,
        )
    return seconds


def _seconds(spec: FieldSpec, moment: datetime) -> float:
    if type(moment) is datetime:  # microseconds at most: the same seconds without pandas (~1.2 → ~0.3 µs)
        if not _FIRST_MOMENT <= moment <= _LAST_MOMENT:
            raise _out_of_range(spec, moment)
        elapsed = moment - _EPOCH
        return float(elapsed.days * 86_400 + elapsed.seconds) + elapsed.microseconds / 1e6
    try:  # pandas, which trains the models, holds time as int64 nanoseconds: years 1677 to 2262
        nanos = int(pd.Timestamp(moment).value)
    except (OverflowError, ValueError) as exc:
        raise _out_of_range(spec, moment) from exc
    return float(nanos // 1_000_000_000) + (nanos % 1_000_000_000) / 1e9


def _out_of_range(spec: FieldSpec, moment: datetime) -> InputError:
    return InputError(
        f"Field {spec.name!r}: {_short(moment.isoformat())} is outside the supported range "
        f"{_TIME_RANGE} (UTC).",
        field=spec.name,
    )


def _open_image(spec: FieldSpec, value: Any) -> OpenedImage | NDArray[Any]:
    if isinstance(value, str):
        return open_image(base64_bytes(value, field=spec.name), field=spec.name)
    if isinstance(value, bytes | bytearray):
        return open_image(bytes(value), field=spec.name)
    if isinstance(value, np.ndarray) and value.size == IMAGE_VALUES:
        return value
    raise InputError(
        f"Field {spec.name!r}: expected a base64-encoded image, got {type(value).__name__}.",
        field=spec.name,
    )


def _bounded_repr() -> reprlib.Repr:
    """``repr`` bounded in depth and length: a value nested a thousand levels deep, or a 400-digit
    integer, is not written out whole (nor recursed into past Python's limit)."""
    bounded = reprlib.Repr()
    bounded.maxlevel, bounded.maxlist, bounded.maxdict = 2, 4, 4
    bounded.maxstring = bounded.maxother = bounded.maxlong = 40
    return bounded


_REPR = _bounded_repr()


def _short(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_ENCODERS: dict[str, Callable[[FieldSpec, Any], Any]] = {
    "numeric": _number,
    "categorical": _string,
    "text": _string,
    "datetime": _timestamp,
}
