"""Prediction-log records of one served request: raw fields (images as hash and stats)."""

from __future__ import annotations

import time
import uuid

from gateway.cascades import LoadedCascade
from gateway.predict import Outcome
from gateway.predlog import PredictionRecord, image_summary


def to_records(cascade: LoadedCascade, outcome: Outcome) -> list[PredictionRecord]:
    """One record per answered row, sharing a request id."""
    request_id = uuid.uuid4().hex
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
                probabilities=answer["probabilities"],
                route=answer["route"],
                versions=answer["versions"],
                flags=answer["skew_flags"],
            )
        )
    return records
