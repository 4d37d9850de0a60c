"""The drift job: one window of the prediction log against the champion's training reference.

    records (prediction log window) ─► current frame ─┐
    training set ─► train slice ─► replay cascade ─► reference frame ─┴► Evidently ─► verdict
                                      ─► drift-report.html, drift-summary.json, drift-metrics.prom

The caller hands in the records — ``skewguard.gateway.predlog.read_records(url, since=, until=)``;
monitoring never imports the gateway — and the training set (``latest_training_set`` finds
the newest parquet the pipeline wrote). The reference is the slice the models were fitted
on: the oldest 80 % by time, as ``skewguard.pipeline.returns_model.split_by_time`` cuts it, at most
``MAX_REFERENCE_ROWS`` of them. Records of other cascades in the window are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from skewguard.bentos.manifest import CascadeManifest
from skewguard.errors import ConfigError
from skewguard.monitoring.drift import DriftMethods, run_drift
from skewguard.monitoring.exposition import add_skew_table, write_metrics
from skewguard.monitoring.findings import DriftSummary
from skewguard.monitoring.frames import (
    MAX_REFERENCE_ROWS,
    current_frame,
    monitored_columns,
    reference_frame,
    reference_rows,
)
from skewguard.monitoring.replay import replay_cascade
from skewguard.monitoring.skew import SkewCheck, SkewSummary
from skewguard.monitoring.verdict import DriftPolicy, with_skew

HTML_FILE = "drift-report.html"
SUMMARY_FILE = "drift-summary.json"
METRICS_FILE = "drift-metrics.prom"
TRAINING_PATTERN = "training-*.parquet"


@dataclass(frozen=True, slots=True)
class DriftJobResult:
    """The findings and where they were written."""

    summary: DriftSummary
    html: Path
    summary_json: Path
    metrics: Path
    skew: SkewSummary | None = None


def check_drift(
    records: Sequence[Mapping[str, Any]],
    training: pd.DataFrame,
    manifest: CascadeManifest,
    out_dir: Path,
    *,
    policy: DriftPolicy | None = None,
    methods: DriftMethods | None = None,
    replay: bool = True,
    holdout: float = 0.2,
    max_reference_rows: int = MAX_REFERENCE_ROWS,
    skew: SkewCheck | None = None,
) -> DriftJobResult:
    """Compare the served ``records`` of ``manifest``'s cascade with its training reference.

    ``replay=False`` skips running the cascade on the reference: the output columns are then
    reported as "no data" and the branches are not compared. With ``skew``, the served online
    features are also compared with the offline store's (``skewguard.monitoring.skew``): a
    ``feature_skew`` section, gauges, a table in the report, and skew reasons in the verdict.
    """
    spec = manifest.spec()
    served = [r for r in records if r.get("cascade", manifest.name) == manifest.name]
    time_field = next((f.name for f in spec if f.kind == "datetime"), None)
    rows = reference_rows(training, time_field, holdout=holdout, max_rows=max_reference_rows)
    columns = monitored_columns(spec)
    outputs = replay_cascade(manifest, rows) if replay else None
    reference = reference_frame(rows, columns, outputs)
    current = current_frame(served, columns)
    found = skew.run(served, manifest, rows) if skew is not None else None  # before Evidently: fails fast
    run = run_drift(reference, current, columns, cascade=manifest.name, policy=policy, methods=methods)
    summary = dataclasses.replace(run.summary, window=_window(served))
    if found is not None:
        summary = dataclasses.replace(summary, verdict=with_skew(summary.verdict, found.reasons()))
    out_dir.mkdir(parents=True, exist_ok=True)
    html = run.save_html(out_dir / HTML_FILE)
    return DriftJobResult(
        summary=summary,
        html=html if found is None else add_skew_table(html, found),
        summary_json=write_summary(summary, out_dir / SUMMARY_FILE, found),
        metrics=write_metrics(summary, out_dir / METRICS_FILE, found),
        skew=found,
    )


def write_summary(summary: DriftSummary, path: Path, skew: SkewSummary | None = None) -> Path:
    """Write the JSON summary atomically (a reader sees the old file or the new one)."""
    data = summary.to_dict() | ({"feature_skew": skew.to_dict()} if skew is not None else {})
    text = json.dumps(data, indent=1, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text + "\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def training_set_of(manifest: CascadeManifest, home: Path) -> Path:
    """The training set the cascade was fitted on (named in its metrics), else the newest one.

    The newest file is not always the champion's: a candidate that lost its gate wrote one too.
    """
    name = manifest.metrics.get("training_set")
    if isinstance(name, str) and (path := home / "training" / Path(name).name).is_file():
        return path
    return latest_training_set(home)


def latest_training_set(home: Path) -> Path:
    """The newest training set the pipeline wrote (``<home>/training/training-*.parquet``)."""
    found = sorted((home / "training").glob(TRAINING_PATTERN), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(
            f"No training set in {home / 'training'}; run `skewguard train` to build one.", field="home"
        )
    return found[-1]


def _window(records: Sequence[Mapping[str, Any]]) -> tuple[datetime, datetime] | None:
    stamps = [float(r["ts"]) for r in records if isinstance(r.get("ts"), int | float)]
    if not stamps:
        return None
    return datetime.fromtimestamp(min(stamps), UTC), datetime.fromtimestamp(max(stamps), UTC)
