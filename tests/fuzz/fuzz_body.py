#!/usr/bin/env python
"""Fuzz the request-body parser and the reading of rows: any bytes are JSON within limits, or a 4xx.

    .venv/bin/python tests/fuzz/fuzz_body.py [libFuzzer options] [corpus folders]

Each input is a request body: ``gateway.body.parse_body`` then ``gateway.predict.parse_rows``
(with the accepted fields of a cascade). Either succeeds, or raises a ``SkewguardError`` whose
status is a 4xx and whose JSON answer encodes; anything else is a finding.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["skewguard"]):
    import orjson

    from skewguard.errors import SkewguardError
    from skewguard.gateway.body import parse_body
    from skewguard.gateway.predict import parse_rows

ACCEPTED = ("customer_id", "price", "quantity", "category", "description", "order_ts", "image")
FETCHED = ("orders_30d", "return_rate_90d")


def test_one_input(data: bytes) -> None:
    try:
        rows = parse_rows(parse_body(data), 1_000, accepted=ACCEPTED, fetched=FETCHED)
    except SkewguardError as exc:
        if not 400 <= exc.status_code < 500:
            raise
        orjson.dumps(exc.to_dict())  # the answer itself must be JSON
        return
    for row in rows:
        assert set(row) <= {*ACCEPTED, *FETCHED}, row


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
