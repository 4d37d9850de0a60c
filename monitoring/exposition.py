"""Drift findings as Prometheus gauges, written in the text exposition format.

The file is meant for node_exporter's textfile collector (name it ``*.prom``) or any
scraper that reads files; it is replaced atomically, so a reader never sees half of it.
Gauges, one series per scope (``overall`` or a branch), column and method:

    skewguard_drift_score        the test's score (p-value or distance: see the method)
    skewguard_drift_threshold    the threshold the score was compared with
    skewguard_drift_detected     1 when that test says the column drifted
    skewguard_drift_no_data      1 for a column that could not be checked
    skewguard_drift_share        drifted share of the checked columns
    skewguard_drift_rows         rows compared, per side (``dataset``)
    skewguard_drift_verdict      1 drift, 0 no drift (absent when undecided); scope="run"
                                 carries the run's combined verdict
    skewguard_drift_decided      0 when there was not enough data to decide
    skewguard_drift_run_timestamp_seconds  when the run finished
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from monitoring.findings import DriftSummary, ScopeDrift, Verdict

_SCOPE = ("cascade", "scope")
_CHECK = (*_SCOPE, "column", "method")


def write_metrics(summary: DriftSummary, path: Path) -> Path:
    """Write the gauges of ``summary`` to ``path`` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), build_registry(summary))
    return path


def build_registry(summary: DriftSummary) -> CollectorRegistry:
    """A registry holding only this run's gauges (never the process's default one)."""
    registry = CollectorRegistry(auto_describe=True)

    def gauge(name: str, help_text: str, labels: tuple[str, ...]) -> Gauge:
        return Gauge(f"skewguard_drift_{name}", help_text, labels, registry=registry)

    gauges = {
        "score": gauge("score", "Drift test score (direction depends on method).", _CHECK),
        "threshold": gauge("threshold", "Threshold of the drift test.", _CHECK),
        "detected": gauge("detected", "1 when the drift test failed.", _CHECK),
        "no_data": gauge("no_data", "1 for a column without data.", (*_SCOPE, "column")),
        "share": gauge("share", "Drifted share of checked columns.", _SCOPE),
        "rows": gauge("rows", "Rows compared.", (*_SCOPE, "dataset")),
        "verdict": gauge("verdict", "1 drift, 0 no drift.", _SCOPE),
        "decided": gauge("decided", "0 when there was not enough data.", _SCOPE),
    }
    for scope in (summary.overall, *summary.branches):
        _record_scope(gauges, summary.cascade, scope)
    _record_verdict(gauges, summary.cascade, "run", summary.verdict)
    finished = gauge("run_timestamp_seconds", "When the drift run finished.", ("cascade",))
    finished.labels(summary.cascade).set(summary.created_at.timestamp())
    return registry


def _record_scope(gauges: dict[str, Gauge], cascade: str, scope: ScopeDrift) -> None:
    for dataset, n in (("reference", scope.n_reference), ("current", scope.n_current)):
        gauges["rows"].labels(cascade, scope.scope, dataset).set(n)
    if scope.share_drifted is not None:
        gauges["share"].labels(cascade, scope.scope).set(scope.share_drifted)
    _record_verdict(gauges, cascade, scope.scope, scope.verdict)
    for column in scope.columns:
        if column.no_data:
            gauges["no_data"].labels(cascade, scope.scope, column.column).set(1)
        for check in column.checks:
            labels = (cascade, scope.scope, column.column, check.method)
            gauges["score"].labels(*labels).set(check.score)
            gauges["threshold"].labels(*labels).set(check.threshold)
            gauges["detected"].labels(*labels).set(int(check.drifted))


def _record_verdict(gauges: dict[str, Gauge], cascade: str, scope: str, verdict: Verdict) -> None:
    gauges["decided"].labels(cascade, scope).set(int(verdict.drift is not None))
    if verdict.drift is not None:
        gauges["verdict"].labels(cascade, scope).set(int(verdict.drift))
