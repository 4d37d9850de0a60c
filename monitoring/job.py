"""The drift job: one window of the prediction log against the champion's training reference.

    records (prediction log window) ─► current frame ─┐
    training set ─► train slice ─► replay cascade ─► reference frame ─┴► Evidently ─► verdict
                                      ─► drift-report.html, drift-summary.json, drift-metrics.prom

The caller hands in the records (``skewguard.predictionlog.records.read_records``; monitoring
never imports the gateway). The training set is the one the manifest's reference set names,
its sha256 checked (:func:`load_reference`); the reference is the slice of it the models were
fitted on — all but the newest ``holdout`` share by its time column, as training cut it — at
most ``MAX_REFERENCE_ROWS`` of them. Records of other cascades in the window are ignored, and
so are rows a canary answered (the champion's answers are what is monitored). A shadow's
answers ride along on the champion's rows and change nothing here.
:func:`run_monitor` is the whole job for a champion, with the defaults its manifest records;
when the window holds a shadow's or a canary's answers, it adds the live comparison
(``skewguard.monitoring.live``) to the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from skewguard.bentos.manifest import CascadeManifest, champion
from skewguard.errors import ConfigError
from skewguard.featurestore.connection import FeastConfig
from skewguard.monitoring.comparison import Comparison, find_candidate
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
from skewguard.monitoring.live import add_to_report, compare_served
from skewguard.monitoring.replay import load_runners, output_classes, replay
from skewguard.monitoring.skew import FeastOfflineFeatures, SkewCheck, SkewPolicy, SkewSummary
from skewguard.monitoring.verdict import DriftPolicy, with_skew
from skewguard.settings import Settings

HTML_FILE = "drift-report.html"
SUMMARY_FILE = "drift-summary.json"
METRICS_FILE = "drift-metrics.prom"


@dataclass(frozen=True, slots=True)
class DriftJobResult:
    """The findings and where they were written."""

    summary: DriftSummary
    html: Path
    summary_json: Path
    metrics: Path
    skew: SkewSummary | None = None
    comparison: Comparison | None = None


def check_drift(
    records: Sequence[Mapping[str, Any]],
    training: pd.DataFrame,
    manifest: CascadeManifest,
    out_dir: Path,
    *,
    policy: DriftPolicy | None = None,
    methods: DriftMethods | None = None,
    replay_outputs: bool = True,
    max_reference_rows: int = MAX_REFERENCE_ROWS,
    skew: SkewCheck | None = None,
) -> DriftJobResult:
    """Compare the served ``records`` of ``manifest``'s cascade with its training reference.

    ``training`` is the cascade's training set; the reference is the share of it the models
    were fitted on (the manifest's reference set says which). ``replay_outputs=False`` skips running
    the cascade on the reference: the output columns are then reported as "no data" and the
    branches are not compared. With ``skew``, the served online features are also compared
    with the offline store's (``skewguard.monitoring.skew``): a ``feature_skew`` section,
    gauges, a table in the report, and skew reasons in the verdict.
    """
    spec = manifest.spec()
    served = _champions_rows(records, manifest.name)
    reference_set = manifest.reference
    time_field = (
        reference_set.time_column
        if reference_set
        else next((f.name for f in spec if f.kind == "datetime"), None)
    )
    holdout = reference_set.holdout if reference_set else 0.0
    rows = reference_rows(training, time_field, holdout=holdout, max_rows=max_reference_rows)
    router, branches = load_runners(manifest)
    columns = monitored_columns(spec, task=manifest.task, classes=output_classes(branches))
    outputs = replay(spec, manifest.router, router, branches, rows) if replay_outputs else None
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


def _champions_rows(records: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """The rows of cascade ``name`` its champion answered (not a canary)."""
    return [
        r for r in records if r.get("cascade", name) == name and r.get("variant", "champion") == "champion"
    ]


def run_monitor(
    name: str,
    records: Sequence[Mapping[str, Any]],
    settings: Settings,
    out_dir: Path,
    *,
    skew: bool = True,
    min_rows: int | None = None,
    watch: Sequence[str] | None = None,
    skew_threshold: float | None = None,
    skew_at: str | None = None,
    labels: pd.DataFrame | None = None,
) -> DriftJobResult:
    """The monitor job of cascade ``name``'s champion: its defaults, each overridable.

    With a shadow's or a canary's answers in ``records``, the report gets the live comparison,
    scored on ``labels`` where they join (``skewguard.monitoring.labels``).
    """
    manifest = champion(name)
    if manifest is None:
        raise ConfigError(
            f"No champion cascade named {name!r}; train one with `skewguard train -f`.", field="name"
        )
    defaults = manifest.monitoring
    policy = DriftPolicy(
        min_rows=min_rows or defaults.min_rows,
        max_share=defaults.drift_share,
        watched=frozenset(watch or defaults.watch) or None,
    )
    check = None
    if skew and manifest.feature_project is not None:
        repo = Path(manifest.feature_repository) if manifest.feature_repository else None
        offline = FeastOfflineFeatures(FeastConfig.for_project(settings, manifest.feature_project, repo))
        threshold = defaults.skew_threshold if skew_threshold is None else skew_threshold
        check = SkewCheck(
            offline, SkewPolicy(max_mismatch_rate=threshold), skew_at or manifest.event_time_field
        )
    result = check_drift(
        records, load_reference(manifest, settings.home), manifest, out_dir, policy=policy, skew=check
    )
    if find_candidate([r for r in records if r.get("cascade") == name]) is None:
        return result
    found = compare_served(name, records, labels=labels)
    add_to_report(out_dir, result.html, result.summary_json, found)
    return dataclasses.replace(result, comparison=found)


def load_reference(manifest: CascadeManifest, home: Path) -> pd.DataFrame:
    """The training set the manifest names, its sha256 checked (a changed file is refused)."""
    found = manifest.reference
    if found is None:
        raise ConfigError(
            f"Cascade {manifest.tag} records no reference set; train it again with `skewguard train -f`.",
            field="reference",
        )
    path = Path(found.path) if Path(found.path).is_absolute() else home / found.path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"The reference set of {manifest.tag} ({path}) cannot be read: {exc.strerror}. Its training "
            "set must stay where training wrote it (under the skewguard home).",
            field="reference",
        ) from exc
    if hashlib.sha256(data).hexdigest() != found.sha256:
        raise ConfigError(
            f"The reference set {path} of {manifest.tag} changed since training (sha256 differs); "
            "monitoring would compare with other data. Train the cascade again.",
            field="reference",
        )
    return pd.read_parquet(io.BytesIO(data))


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


def _window(records: Sequence[Mapping[str, Any]]) -> tuple[datetime, datetime] | None:
    stamps = [float(r["ts"]) for r in records if isinstance(r.get("ts"), int | float)]
    if not stamps:
        return None
    return datetime.fromtimestamp(min(stamps), UTC), datetime.fromtimestamp(max(stamps), UTC)
