"""Raw rows → canonical columns: every bad input is an InputError that names the field."""

from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd
import pytest

from skewguard.bentos.images import encode_png
from skewguard.bentos.inputs import encode_frame, encode_rows
from skewguard.bentos.spec import FieldSpec, InputSpec
from skewguard.errors import ImageError, InputError, PayloadTooLargeError

SPEC = InputSpec(
    fields=(
        FieldSpec("price", "numeric"),
        FieldSpec("category", "categorical", categories=("a", "b")),
        FieldSpec("description", "text"),
        FieldSpec("order_ts", "datetime"),
        FieldSpec("image", "image", nullable=False),
    )
)
PIXELS = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)


def _row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "price": 12.5,
        "category": "a",
        "description": "blue mug",
        "order_ts": "2026-03-02T23:59:59Z",
        "image": base64.b64encode(encode_png(PIXELS)).decode(),
    }
    row.update(changes)
    return row


def test_valid_row_becomes_typed_columns() -> None:
    batch = encode_rows(SPEC, [_row(), _row(price=None, description=None)])
    feeds = batch.to_feeds()
    assert feeds["price"].dtype == np.float64
    assert math.isnan(feeds["price"][1, 0])
    assert feeds["description"][1, 0] == ""
    assert feeds["order_ts"][0, 0] == pd.Timestamp("2026-03-02T23:59:59Z").timestamp()
    assert feeds["image"].shape == (2, 3072)
    assert np.array_equal(feeds["image"][0].astype(np.uint8).reshape(32, 32, 3), PIXELS)


def test_frame_round_trip_keeps_values() -> None:
    batch = encode_rows(SPEC, [_row(), _row(order_ts=1.7e9)])
    frame = batch.to_frame()
    again = encode_frame(SPEC, frame)
    for name in SPEC.names:
        left, right = batch.columns[name], again.columns[name]
        assert np.array_equal(left, right), name
    assert str(frame["order_ts"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        ({"price": "12"}, "price", InputError),
        ({"price": True}, "price", InputError),
        ({"price": float("inf")}, "price", InputError),
        ({"category": 3}, "category", InputError),
        ({"description": "x" * 20_000}, "description", PayloadTooLargeError),
        ({"order_ts": "yesterday"}, "order_ts", InputError),
        ({"order_ts": "2026-03-02"}, "order_ts", InputError),  # a date: the schema says date-time
        ({"image": "not base64!"}, "image", ImageError),
        ({"image": base64.b64encode(b"plain text").decode()}, "image", ImageError),
        ({"image": None}, "image", InputError),
        ({"colour": "red"}, "colour", InputError),
    ],
)
def test_bad_values_name_the_field(change: dict[str, object], field: str, error: type[InputError]) -> None:
    with pytest.raises(error) as caught:
        encode_rows(SPEC, [_row(**change)])
    assert caught.value.field == field
    assert field in caught.value.message


def test_date_times_with_a_space_or_an_offset_are_read_and_a_bare_date_is_named() -> None:
    for sent in ("2026-03-02 23:59:59+00:00", "2026-03-03T00:59:59+01:00"):
        batch = encode_rows(SPEC, [_row(order_ts=sent)])
        assert batch.columns["order_ts"][0, 0] == pd.Timestamp("2026-03-02T23:59:59Z").timestamp()
    with pytest.raises(InputError, match="a date without a time"):
        encode_rows(SPEC, [_row(order_ts="20260302")])


def test_date_times_convert_to_the_seconds_pandas_gives_and_its_range_is_enforced() -> None:
    """``datetime`` values skip pandas; a ``pd.Timestamp`` (nanoseconds) still goes through it."""
    rng = np.random.default_rng(7)
    first, last = pd.Timestamp.min.ceil("us").value // 1000, pd.Timestamp.max.floor("us").value // 1000
    micros = [first, last, 0, -1, -500_000, *(int(x) for x in rng.integers(first, last, 500))]
    for micro in micros:
        aware = pd.Timestamp(micro, unit="us", tz="UTC")
        expected = float(aware.value // 1_000_000_000) + (aware.value % 1_000_000_000) / 1e9
        for sent in (aware.to_pydatetime(), aware.isoformat(), aware.tz_convert("Asia/Kolkata").isoformat()):
            got = encode_rows(SPEC, [_row(order_ts=sent)]).columns["order_ts"][0, 0]
            assert got == expected, (sent, got, expected)
    nanos = pd.Timestamp("2026-03-02T23:59:59.123456789Z")
    assert encode_rows(SPEC, [_row(order_ts=nanos)]).columns["order_ts"][0, 0] == 1772495999.123456789
    for outside in ("1677-09-21T00:12:43.145224Z", "2262-04-11T23:47:16.854776Z", "0001-01-01T00:00:00Z"):
        with pytest.raises(InputError, match="outside the supported range") as caught:
            encode_rows(SPEC, [_row(order_ts=outside)])
        assert caught.value.field == "order_ts"


def test_missing_field_and_empty_batch_are_rejected() -> None:
    row = _row()
    del row["category"]
    with pytest.raises(InputError, match="'category'") as caught:
        encode_rows(SPEC, [row])
    assert caught.value.field == "category"
    with pytest.raises(InputError, match="at least one row"):
        encode_rows(SPEC, [])
