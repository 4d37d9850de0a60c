#!/usr/bin/env python
"""Fuzz row encoding: rows of any JSON-like values are model inputs of the right shape, or a 4xx.

    .venv/bin/python tests/fuzz/fuzz_rows.py [libFuzzer options] [corpus folders]

The fuzzer's bytes choose 1-3 rows for a spec with every field kind (numeric, categorical,
text, datetime, image), each value of any JSON type — huge integers, non-finite floats,
strings with lone surrogates, timestamps, base64 that may or may not be an image, nested
lists and objects — plus extra keys. ``bentos.inputs.encode_rows`` either returns a batch
whose numeric columns hold finite numbers or NaN, or raises a 4xx ``SkewguardError`` whose
JSON answer encodes.
"""

from __future__ import annotations

import base64
import io
import sys
import warnings
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports(include=["skewguard"]):
    import numpy as np
    import orjson

    from skewguard.bentos.images import IMAGE_VALUES
    from skewguard.bentos.inputs import encode_rows
    from skewguard.bentos.spec import FieldSpec, InputSpec
    from skewguard.errors import SkewguardError

SPEC = InputSpec(
    (
        FieldSpec("price", "numeric"),
        FieldSpec("quantity", "numeric", nullable=False),
        FieldSpec("category", "categorical", categories=("mugs", "lamps")),
        FieldSpec("description", "text"),
        FieldSpec("order_ts", "datetime"),
        FieldSpec("image", "image", nullable=False),
    )
)
TIMESTAMPS = ("2026-03-01T14:30:00Z", "2026-03-01", "1677-09-21T00:12:43", "2262-04-11T23:47:16.854775807")


def _png(side: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (10, 20, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG = _png(8)


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    """Any JSON-like value, its type and content chosen by the fuzzer's bytes."""
    kinds = _SCALARS if depth >= 3 else (*_SCALARS, _list, _object)
    return kinds[fdp.ConsumeIntInRange(0, len(kinds) - 1)](fdp, depth)


def _timestamp(fdp: atheris.FuzzedDataProvider, depth: int) -> str:
    stamp = fdp.PickValueInList(list(TIMESTAMPS))
    return stamp[: fdp.ConsumeIntInRange(0, len(stamp))] + fdp.ConsumeUnicode(3)


def _list(fdp: atheris.FuzzedDataProvider, depth: int) -> list[Any]:
    return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]


def _object(fdp: atheris.FuzzedDataProvider, depth: int) -> dict[str, Any]:
    return {fdp.ConsumeUnicode(4): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}


_SCALARS: tuple[Callable[[atheris.FuzzedDataProvider, int], Any], ...] = (
    lambda fdp, depth: None,
    lambda fdp, depth: fdp.ConsumeBool(),
    lambda fdp, depth: fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 200)),  # up to 1,600 bits
    lambda fdp, depth: fdp.ConsumeFloat(),  # NaN, ±inf, subnormals too
    lambda fdp, depth: fdp.ConsumeRegularFloat(),
    lambda fdp, depth: fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 64)),  # lone surrogates too
    _timestamp,
    lambda fdp, depth: base64.b64encode(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))).decode(),
    lambda fdp, depth: PNG,
    lambda fdp, depth: fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)),
)


def _row(fdp: atheris.FuzzedDataProvider) -> dict[str, Any]:
    row = {f.name: _value(fdp) for f in SPEC if fdp.ConsumeIntInRange(0, 9) > 0}  # now and then missing
    for _ in range(fdp.ConsumeIntInRange(0, 1) * fdp.ConsumeIntInRange(0, 2)):
        row[fdp.ConsumeUnicode(6)] = _value(fdp)
    return row


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    rows = [_row(fdp) for _ in range(fdp.ConsumeIntInRange(1, 3))]
    try:
        batch = encode_rows(SPEC, rows, allowed_extra=("customer_id",), max_pixels=10_000)
    except SkewguardError as exc:
        if not 400 <= exc.status_code < 500:
            raise
        orjson.dumps(exc.to_dict())
        return
    feeds = batch.to_feeds()
    for name in ("price", "quantity", "order_ts"):
        assert not np.isinf(feeds[name]).any(), (name, feeds[name])
    assert feeds["image"].shape == (len(rows), IMAGE_VALUES)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
