"""Drift with Evidently 0.7: the training reference against the served window, overall and per branch.

Every Evidently type stays in this module; callers get a ``DriftRun``: our ``DriftSummary``
plus ``save_html`` for Evidently's self-contained report. Scopes: all rows, then the rows of
each cascade branch (``route``) on both sides, with one ``ValueDrift`` test per column and
method. Whether a column drifted is Evidently's test decision (the test whose
``metric_config.metric_id`` is the metric's id has status FAIL), never our reading of the
score, whose direction depends on the method.

The overall scope runs as an Evidently ``Report``. A branch is decided by the very stat-test
functions that ``ValueDrift`` calls (same cleaning, same results to the last digit), without
the plots a report draws for every column — those took half of a report's time, and the
branches' reports were rarely opened; ``save_html(scope=branch)`` builds one on demand. The
branches are computed in a forked child beside the overall report (``skewguard.monitoring.forked``),
on a second CPU when there is one.

Methods are fixed per kind (``DriftMethods``), not Evidently's defaults, which switch at
1,000 reference rows from p-values to distances — a branch would otherwise be judged by
other rules than the whole. Categorical columns get the L-infinity distance as well (the
TFDV/Vertex skew measure, ``skewguard.monitoring.distance``), registered as an Evidently stat test
so that it shows in the HTML report too.

Evidently fails the whole report for one bad column, so columns are screened first: one
that is missing or all-missing on either side is reported as "no data" instead, and so is a
text column too poor in words for the domain classifier ("After pruning, no terms remain") —
that check fits a TF-IDF, so it runs only when Evidently failed.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests.registry import StatTest, get_stattest, register_stattest
from evidently.legacy.core import ColumnType
from evidently.metrics import ValueDrift
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from skewguard.errors import DriftReportError
from skewguard.monitoring.distance import linf_from_shares
from skewguard.monitoring.findings import Check, ColumnDrift, DriftSummary, ScopeDrift
from skewguard.monitoring.forked import Forked
from skewguard.monitoring.frames import ROUTE, Column, ColumnSet
from skewguard.monitoring.verdict import DriftPolicy, combine, decide

LINF = "linf"
OVERALL = "overall"
POOR_TEXT = "too few distinct words for the text drift classifier"
_COLUMN_TYPES = {
    "numeric": ColumnType.Numerical,
    "categorical": ColumnType.Categorical,
    "text": ColumnType.Text,
}


@dataclass(frozen=True, slots=True)
class DriftMethods:
    """The test and threshold per column kind; ``linf_threshold=None`` leaves L-infinity out.

    Distances with fixed thresholds, so that a sample's size does not decide the rule:
    normed Wasserstein (in reference standard deviations), Jensen–Shannon distance, and for
    text the ROC AUC of a classifier telling reference from current texts.
    """

    numeric: tuple[str, float] = ("wasserstein", 0.1)
    categorical: tuple[str, float] = ("jensenshannon", 0.1)
    text: tuple[str, float] = ("abs_text_content_drift", 0.55)
    linf_threshold: float | None = 0.1

    def for_kind(self, kind: str) -> list[tuple[str, float]]:
        if kind == "categorical" and self.linf_threshold is not None:
            return [self.categorical, (LINF, self.linf_threshold)]
        return [getattr(self, kind)]


class DriftRun:
    """The findings of one run, and Evidently's HTML report of each compared scope."""

    __slots__ = ("_reports", "_snapshots", "summary")

    def __init__(
        self,
        summary: DriftSummary,
        snapshots: Mapping[str, Any],
        reports: Mapping[str, Callable[[], Any]] | None = None,
    ) -> None:
        self.summary = summary
        self._snapshots = dict(snapshots)
        self._reports = dict(reports or {})
        """Scopes decided without a report: how to build their report when it is asked for."""

    def save_html(self, path: Path, scope: str = OVERALL) -> Path:
        """Write the self-contained HTML report of ``scope``; a short page if it was not compared."""
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot = self._snapshots.get(scope)
        if snapshot is None and scope in self._reports:
            snapshot = self._snapshots[scope] = self._reports.pop(scope)()
        if snapshot is not None:
            page = snapshot.get_html_str(as_iframe=False)  # Evidently's page has no <title>: add ours
            title = f"<title>{html.escape(_title(self.summary, scope))}</title>"
            path.write_text(page.replace("<head>", f"<head>{title}", 1), encoding="utf-8")
        else:
            path.write_text(_placeholder_page(self.summary, scope), encoding="utf-8")
        return path


def run_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: ColumnSet,
    *,
    cascade: str = "",
    policy: DriftPolicy | None = None,
    methods: DriftMethods | None = None,
    branch_column: str = ROUTE,
) -> DriftRun:
    """Compare ``current`` with ``reference`` (``skewguard.monitoring.frames``) overall and per branch.

    BLAS and OpenMP run one thread each meanwhile: measured on the drift benchmark's frames,
    their default thread pools made Evidently's report slower (1.48 s wall, 2.30 s CPU, against
    1.33 s and 1.33 s) by spinning, and the second CPU does the branch scopes instead.
    """
    policy, methods = policy or DriftPolicy(), methods or DriftMethods()
    _register_linf()
    with threadpool_limits(limits=1):
        branch_scopes = Forked(_branches, reference, current, columns, policy, methods, branch_column)
        overall, snapshot = _compare(OVERALL, reference, current, columns, policy, methods)
        branches, notes = branch_scopes.result()
    reports: dict[str, Callable[[], Any]] = {}
    for scope in branches:
        checked = ColumnSet(tuple(columns.get(c.column) for c in scope.checked))
        if len(checked):
            ref, cur = (f[f[branch_column] == scope.scope] for f in (reference, current))
            reports[scope.scope] = functools.partial(_run_report, scope.scope, ref, cur, checked, methods)
    verdict = combine(overall.verdict, {b.scope: b.verdict for b in branches})
    summary = DriftSummary(cascade, datetime.now(UTC), verdict, overall, tuple(branches), tuple(notes))
    return DriftRun(summary, {OVERALL: snapshot}, reports)


def _branches(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: ColumnSet,
    policy: DriftPolicy,
    methods: DriftMethods,
    branch_column: str,
) -> tuple[list[ScopeDrift], list[str]]:
    """Each branch's scope, decided by the stat tests (run beside the overall report: ``Forked``)."""
    if branch_column not in columns.names:
        return [], [f"no branch comparison: no {branch_column!r} column"]
    if reference[branch_column].isna().all():
        return [], ["no branch comparison: the reference has no routes (replay the cascade on it)"]
    names = set(reference[branch_column].dropna()) | set(current[branch_column].dropna())
    inside = columns.without([branch_column])
    scopes = []
    for name in sorted(names):
        ref, cur = (f[f[branch_column] == name] for f in (reference, current))
        scopes.append(_compare_by_stattests(name, ref, cur, inside, policy, methods))
    return scopes, []


def _compare(
    scope: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: ColumnSet,
    policy: DriftPolicy,
    methods: DriftMethods,
) -> tuple[ScopeDrift, Any]:
    """One scope as an Evidently report: screen the columns, run the report on the rest, decide."""
    n_ref, n_cur = len(reference), len(current)
    if n_ref < policy.min_rows or n_cur < policy.min_rows:
        verdict = decide((), n_reference=n_ref, n_current=n_cur, policy=policy)
        return ScopeDrift(scope, n_ref, n_cur, (), verdict), None
    no_data = {c.name: reason for c in columns if (reason := _screen(c, reference, current))}
    usable = columns.without(list(no_data))
    snapshot, checks = None, {}
    if len(usable):
        try:
            snapshot = _run_report(scope, reference, current, usable, methods)
        except DriftReportError:
            poor = {
                c.name: POOR_TEXT for c in usable if c.kind == "text" and _is_poor_text(c, reference, current)
            }
            if not poor:
                raise
            no_data |= poor
            usable = usable.without(list(poor))
            snapshot = _run_report(scope, reference, current, usable, methods) if len(usable) else None
        checks = _read_checks(snapshot) if snapshot is not None else {}
    return _scope(scope, reference, current, columns, checks, no_data, policy), snapshot


def _compare_by_stattests(
    scope: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: ColumnSet,
    policy: DriftPolicy,
    methods: DriftMethods,
) -> ScopeDrift:
    """One scope decided by the stat tests ``ValueDrift`` runs, without building a report."""
    if len(reference) < policy.min_rows or len(current) < policy.min_rows:
        return _scope(scope, reference, current, ColumnSet(()), {}, {}, policy)
    no_data = {c.name: reason for c in columns if (reason := _screen(c, reference, current))}
    checks: dict[str, list[Check]] = {}
    for column in columns.without(list(no_data)):
        try:
            checks[column.name] = _stattest_checks(column, reference, current, methods)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            if column.kind == "text" and _is_poor_text(column, reference, current):
                no_data[column.name] = POOR_TEXT
                continue
            raise DriftReportError(
                f"Evidently could not compare {column.name!r} in the {scope!r} scope: {exc}"
            ) from exc
    return _scope(scope, reference, current, columns, checks, no_data, policy)


def _stattest_checks(
    column: Column, reference: pd.DataFrame, current: pd.DataFrame, methods: DriftMethods
) -> list[Check]:
    """What ``ValueDrift`` computes for its test: the same cleaning (±inf and NaN dropped), the same call."""
    kind = _COLUMN_TYPES[column.kind]
    ref, cur = (f[column.name].replace([np.inf, -np.inf], np.nan).dropna() for f in (reference, current))
    checks = []
    for method, threshold in methods.for_kind(column.kind):
        result = get_stattest(ref, cur, kind, method)(ref, cur, kind, threshold)
        checks.append(Check(method, float(result.drift_score), float(threshold), bool(result.drifted)))
    return checks


def _scope(
    scope: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: ColumnSet,
    checks: Mapping[str, list[Check]],
    no_data: Mapping[str, str],
    policy: DriftPolicy,
) -> ScopeDrift:
    n_ref, n_cur = len(reference), len(current)
    findings = tuple(
        ColumnDrift(c.name, c.kind, tuple(checks.get(c.name, ())), no_data.get(c.name, "")) for c in columns
    )
    verdict = decide(findings, n_reference=n_ref, n_current=n_cur, policy=policy)
    return ScopeDrift(scope, n_ref, n_cur, findings, verdict)


def _screen(column: Column, reference: pd.DataFrame, current: pd.DataFrame) -> str:
    """Why Evidently cannot test this column ("" when it can), short of fitting anything."""
    for side, frame in (("current", current), ("reference", reference)):
        if column.name not in frame.columns:
            return f"missing in {side}"
        values = frame[column.name]
        if pd.api.types.is_numeric_dtype(values):
            empty = not np.isfinite(values.to_numpy(dtype=np.float64)).any()  # Evidently drops ±inf
        else:
            empty = bool(values.isna().all())
        if empty:
            return f"all values missing in {side}"
    return ""


def _is_poor_text(column: Column, reference: pd.DataFrame, current: pd.DataFrame) -> bool:
    return not _has_vocabulary(reference[column.name], current[column.name])


def _has_vocabulary(reference: pd.Series, current: pd.Series) -> bool:
    """Whether Evidently's text test can fit: it mirrors that test's 50/50 split (seed 42) and
    its TF-IDF (``max_df=0.5``, English stop words), which raises when no term survives."""
    texts = pd.concat([reference.dropna(), current.dropna()], ignore_index=True)
    labels = [0] * int(reference.notna().sum()) + [1] * int(current.notna().sum())
    if len(texts) < 4:
        return False
    train, _, y_train, y_test = train_test_split(texts, labels, test_size=0.5, random_state=42, shuffle=True)
    if len(set(y_train)) < 2 or len(set(y_test)) < 2:
        return False
    try:
        TfidfVectorizer(sublinear_tf=True, max_df=0.5, stop_words="english").fit(train)
    except ValueError:  # "After pruning, no terms remain" / "empty vocabulary"
        return False
    return True


def _run_report(
    scope: str, reference: pd.DataFrame, current: pd.DataFrame, columns: ColumnSet, methods: DriftMethods
) -> Any:
    kinds = {kind: [c.name for c in columns if c.kind == kind] for kind in ("numeric", "categorical", "text")}
    definition = DataDefinition(
        numerical_columns=kinds["numeric"],
        categorical_columns=kinds["categorical"],
        text_columns=kinds["text"],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
    )
    metrics = [
        ValueDrift(column=c.name, method=method, threshold=threshold)
        for c in columns
        for method, threshold in methods.for_kind(c.kind)
    ]
    names = list(columns.names)
    try:
        return Report(metrics, include_tests=True).run(
            Dataset.from_pandas(current[names].reset_index(drop=True), data_definition=definition),
            Dataset.from_pandas(reference[names].reset_index(drop=True), data_definition=definition),
        )
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise DriftReportError(f"Evidently could not compare the {scope!r} scope: {exc}") from exc


def _read_checks(snapshot: Any) -> dict[str, list[Check]]:
    """Column → checks; drifted = the metric's own test failed."""
    data = snapshot.dict()
    status = {test["metric_config"]["metric_id"]: test["status"] for test in data["tests"]}
    checks: dict[str, list[Check]] = {}
    for metric in data["metrics"]:
        config = metric["config"]
        if metric["id"] not in status:
            raise DriftReportError(f"Evidently returned no drift test for column {config['column']!r}.")
        outcome = str(getattr(status[metric["id"]], "value", status[metric["id"]]))
        check = Check(
            str(config["method"]), float(metric["value"]), float(config["threshold"]), outcome == "FAIL"
        )
        checks.setdefault(str(config["column"]), []).append(check)
    return checks


@functools.cache
def _register_linf() -> None:
    """Make ``method="linf"`` known to Evidently (its registry is process-wide; once is enough)."""
    test = StatTest(
        name=LINF,
        display_name="L-infinity distance",
        allowed_feature_types=[ColumnType.Categorical],
        default_threshold=0.1,
    )
    register_stattest(test, _linf_stattest)


def _linf_stattest(
    reference: pd.Series, current: pd.Series, feature_type: Any, threshold: float
) -> tuple[float, bool]:
    # pandas counts what ``category_shares`` counts (missing values left out), a few times faster
    score = linf_from_shares(*(side.value_counts(normalize=True).to_dict() for side in (reference, current)))
    return score, score > threshold  # TFDV flags a distance above the threshold


def _title(summary: DriftSummary, scope: str) -> str:
    return f"Drift report: {summary.cascade or 'cascade'} — {scope}"


def _placeholder_page(summary: DriftSummary, scope: str) -> str:
    found = [s for s in (summary.overall, *summary.branches) if s.scope == scope]
    reasons = found[0].verdict.reasons if found else (f"no scope {scope!r} in this run",)
    items = "".join(f"<li>{html.escape(reason)}</li>" for reason in reasons)
    title = html.escape(_title(summary, scope))
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body><h1>{title}</h1><p>Not compared ({summary.created_at:%Y-%m-%d %H:%M} UTC):</p>"
        f"<ul>{items}</ul></body></html>\n"
    )
