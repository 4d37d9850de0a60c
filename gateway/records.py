"""Prediction-log records of one served request: raw fields (images as hash and stats)."""

from __future__ import annotations

import os
import time

from skewguard.gateway.cascades import LoadedCascade
from skewguard.gateway.predict import Outcome
from skewguard.predictionlog.records import PredictionRecord, image_summary


def new_request_id(now_ns: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: Unix milliseconds first, so ids sort by time.

    The log's primary key starts with the request id. Random ids (uuid4) land anywhere in
    its index, and each insert touched another page, so writing a record cost several times
    more once the log was large; ids in time order insert into the index's last pages, and
    the cost stays flat as the table grows (docs/benchmarks.md). Twelve bits of sub-millisecond
    time follow the milliseconds (RFC 9562's method 3), then 62 random bits.
    """
    ns = time.time_ns() if now_ns is None else now_ns
    ms, rest = divmod(ns, 1_000_000)
    value = (
        (ms & _MS_MASK) << 80
        | 0x7 << 76  # version
        | (rest * 4096 // 1_000_000) << 64
        | 0b10 << 62  # variant
        | int.from_bytes(os.urandom(8)) & _RANDOM_MASK
    )
    return f"{value:032x}"


_MS_MASK, _RANDOM_MASK = (1 << 48) - 1, (1 << 62) - 1


def to_records(cascade: LoadedCascade, outcome: Outcome) -> list[PredictionRecord]:
    """One record per answered row, sharing a request id."""
    request_id = new_request_id()
    now = time.time()
    images = [f.name for f in cascade.spec if f.kind == "image"]
    online = tuple(cascade.manifest.feature_refs)
    records = []
    for i, (raw, answer) in enumerate(zip(outcome.raw_rows, outcome.rows, strict=True)):
        fields = {k: v for k, v in raw.items() if k not in online}
        for name in images:
            fields[name] = image_summary(raw[name], outcome.batch.columns[name][i])
        records.append(
            PredictionRecord(
                request_id=request_id,
                row=i,
                ts=now,
                cascade=cascade.name,
                fields=fields,
                online_features=answer["features"],
                defaults_used=answer["defaults_used"],
                prediction=answer["prediction"],
                probabilities=answer.get("probabilities"),
                route=answer["route"],
                versions=answer["versions"],
                flags=answer["skew_flags"],
            )
        )
    return records
