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

With a feature-skew check (``skewguard.monitoring.skew``), per cascade and feature:

    skewguard_feature_skew_rows            rows compared
    skewguard_feature_skew_mismatch_rate   share of rows whose served value is not the offline one
    skewguard_feature_skew_missing         rows with a value on one side only (``side``: the one missing)
    skewguard_feature_skew_mean_abs_diff   mean |served − offline| where both have a value
    skewguard_feature_skew_max_abs_diff    largest |served − offline|
    skewguard_feature_skew_normalized      mean |diff| / the training standard deviation
    skewguard_feature_skew_detected        1 when the mismatch rate is above the threshold

``add_skew_table`` puts the same figures as a small table at the top of the HTML report.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from skewguard.monitoring.findings import DriftSummary, ScopeDrift, Verdict
from skewguard.monitoring.skew import FeatureSkew, SkewSummary

_SCOPE = ("cascade", "scope")
_CHECK = (*_SCOPE, "column", "method")


def write_metrics(summary: DriftSummary, path: Path, skew: SkewSummary | None = None) -> Path:
    """Write the gauges of ``summary`` (and of ``skew``) to ``path`` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    registry = build_registry(summary)
    if skew is not None:
        _record_skew(registry, summary.cascade, skew)
    write_to_textfile(str(path), registry)
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


def _record_skew(registry: CollectorRegistry, cascade: str, skew: SkewSummary) -> None:
    labels = ("cascade", "feature")
    helps = {
        "rows": "Rows compared.",
        "mismatch_rate": "Share of rows whose served value is not the offline one.",
        "mean_abs_diff": "Mean |served - offline| where both have a value.",
        "max_abs_diff": "Largest |served - offline|.",
        "normalized": "Mean |served - offline| / training standard deviation.",
        "detected": "1 when the mismatch rate is above the threshold.",
    }
    names = tuple(helps)
    gauges = {
        name: Gauge(f"skewguard_feature_skew_{name}", text, labels, registry=registry)
        for name, text in helps.items()
    }
    missing = Gauge(
        "skewguard_feature_skew_missing", "Rows with one side missing.", (*labels, "side"), registry=registry
    )
    for found in skew.features:
        values: tuple[float | None, ...] = (found.rows, found.mismatch_rate, found.mean_abs_diff)
        values += (found.max_abs_diff, found.normalized_mean_abs_diff, int(found.skewed))
        for name, value in zip(names, values, strict=True):
            if value is not None:
                gauges[name].labels(cascade, found.feature).set(value)
        missing.labels(cascade, found.feature, "online").set(found.missing_online)
        missing.labels(cascade, found.feature, "offline").set(found.missing_offline)


def add_skew_table(report: Path, skew: SkewSummary) -> Path:
    """Put the skew table at the top of the HTML report's body (at its end if it has no body tag)."""
    page = report.read_text(encoding="utf-8")
    section = skew_table(skew)
    body = re.search(r"<body[^>]*>", page)
    at = body.end() if body else len(page)
    report.write_text(page[:at] + section + page[at:], encoding="utf-8")
    return report


def skew_table(skew: SkewSummary) -> str:
    """An HTML section of its own (inline styles): one row per feature, notes below."""
    head = "feature,rows,mismatch rate,differ,missing online,missing offline,mean |diff|,max |diff|,"
    head += "mean |diff| / training std,skewed"
    cell = "padding:2px 10px;text-align:right;border-bottom:1px solid #ddd"
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td style='{cell}{';text-align:left' if i == 0 else ''}'>{html.escape(text)}</td>"
            for i, text in enumerate(_cells(found))
        )
        + "</tr>"
        for found in skew.features
    )
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in skew.notes)
    policy = skew.policy
    return (
        "<section id='feature-skew' style='font-family:sans-serif;margin:16px'>"
        "<h2>Online vs offline feature skew</h2><p>Served online values against Feast's point-in-time "
        f"offline values for the same entity and time; a feature is skewed above "
        f"{policy.max_mismatch_rate:.1%} mismatching rows (tolerance {policy.atol:g} + "
        f"{policy.rtol:g}·|offline|).</p><table style='border-collapse:collapse'><tr>"
        + "".join(f"<th style='{cell}'>{html.escape(h)}</th>" for h in head.split(","))
        + f"</tr>{rows}</table><ul>{notes}</ul></section>"
    )


def _cells(found: FeatureSkew) -> tuple[str, ...]:
    def number(value: float | None) -> str:
        return "–" if value is None else f"{value:.4g}"

    rate = "–" if found.mismatch_rate is None else f"{found.mismatch_rate:.2%}"
    counts = (found.differ, found.missing_online, found.missing_offline)
    distances = (found.mean_abs_diff, found.max_abs_diff, found.normalized_mean_abs_diff)
    flag = "yes" if found.skewed else "no"
    return (found.feature, str(found.rows), rate, *map(str, counts), *map(number, distances), flag)
