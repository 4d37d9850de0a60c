"""Prediction-log records of one served request: raw fields (images as hash and stats), and what
an attached candidate did with the same rows (a shadow's answer, or its failure)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

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


def to_records(
    cascade: LoadedCascade,
    outcome: Outcome,
    *,
    request_id: str | None = None,
    rows: Sequence[int] | None = None,
    variant: str = "champion",
    latency_ms: float | None = None,
) -> list[PredictionRecord]:
    """One record per answered row, sharing a request id (a new one unless given).

    ``rows``: each answered row's index in the request (when the request's rows were split
    between the champion and a canary); ``variant`` and ``latency_ms``: who answered, how fast.
    """
    request_id = request_id or new_request_id()
    now = time.time()
    images = [f.name for f in cascade.spec if f.kind == "image"]
    indices = range(len(outcome.rows)) if rows is None else rows
    records = []
    for i, (raw, answer, row) in enumerate(zip(outcome.raw_rows, outcome.rows, indices, strict=True)):
        fields = raw  # the client's fields; its images as their hash and statistics
        if images:
            pixels = outcome.batch.columns
            fields = {**raw, **{name: image_summary(raw[name], pixels[name][i]) for name in images}}
        records.append(
            PredictionRecord(
                request_id=request_id,
                row=row,
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
                variant=variant,
                latency_ms=latency_ms,
            )
        )
    return records


def candidate_answers(
    cascade: LoadedCascade, outcome: Outcome, variant: str, latency_ms: float
) -> list[dict[str, Any]]:
    """What the log keeps of the candidate's answer to each row, beside the champion's."""
    version = str(cascade.manifest.tag)
    kept = []
    for answer in outcome.rows:
        entry: dict[str, Any] = {"variant": variant, "version": version, "prediction": answer["prediction"]}
        if "probabilities" in answer:
            entry["probabilities"] = answer["probabilities"]
        entry |= {"route": answer["route"], "flags": answer["skew_flags"], "latency_ms": latency_ms}
        kept.append(entry)
    return kept


def candidate_failure(
    version: str, variant: str, *, error: str | None = None, latency_ms: float | None = None
) -> dict[str, Any]:
    """The candidate's entry for a row it did not answer: its ``error``, or ``dropped`` when shed."""
    if error is None:
        return {"variant": variant, "version": version, "dropped": True}
    return {"variant": variant, "version": version, "error": error, "latency_ms": latency_ms}


def with_candidate(
    records: Sequence[PredictionRecord], candidates: Sequence[dict[str, Any]]
) -> list[PredictionRecord]:
    """The records, each given the candidate's entry for the same row: set in place, as the
    records are the request's own and not logged yet (one copy of each per request is saved)."""
    for record, entry in zip(records, candidates, strict=True):
        record.candidate = entry
    return list(records)
