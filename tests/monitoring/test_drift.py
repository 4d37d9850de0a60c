"""Evidently drift on the demo data: the knobs turned are the columns flagged, and no others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from skewguard.monitoring import drift as drift_module
from skewguard.monitoring.drift import DriftMethods, DriftRun, run_drift
from skewguard.monitoring.frames import ColumnSet, current_frame
from skewguard.monitoring.verdict import DriftPolicy
from tests.monitoring.conftest import INPUT_COLUMNS, WATCHED

POLICY = DriftPolicy(watched=WATCHED)


@pytest.fixture(scope="module")
def calm(reference: pd.DataFrame, served_records: list[dict[str, Any]], columns: ColumnSet) -> DriftRun:
    return run_drift(
        reference, current_frame(served_records, columns), columns, cascade="monitor", policy=POLICY
    )


@pytest.fixture(scope="module")
def drifted(reference: pd.DataFrame, drifted_records: list[dict[str, Any]], columns: ColumnSet) -> DriftRun:
    current = current_frame(drifted_records, columns)
    return run_drift(reference, current, columns, cascade="monitor", policy=POLICY)


def test_a_window_without_drift_gets_a_no_drift_verdict(calm: DriftRun) -> None:
    summary = calm.summary
    assert summary.verdict.drift is False
    assert summary.overall.verdict.drift is False
    assert not set(summary.overall.drifted_columns) & WATCHED
    assert summary.overall.share_drifted is not None
    assert summary.overall.share_drifted <= POLICY.max_share


def test_the_demo_customer_stats_move_with_time(calm: DriftRun) -> None:
    """Not a knob: the generator's return rates trend and account ages grow, so a later
    window differs from the training slice — flagged, reported, not watched here."""
    assert "return_rate_90d" in calm.summary.overall.drifted_columns
    assert any("return_rate_90d" in reason for reason in calm.summary.verdict.reasons)


def test_the_drift_knobs_flag_exactly_their_columns(drifted: DriftRun) -> None:
    overall = drifted.summary.overall
    flagged = {name for name in overall.drifted_columns if name in INPUT_COLUMNS}
    assert flagged == {"price", "category", "description"}
    assert drifted.summary.verdict.drift is True
    for name in ("price", "category", "description"):
        assert any(
            reason.startswith(f"overall: {name} drifted") for reason in drifted.summary.verdict.reasons
        )
    # the model notices: pricier items and unseen categories move P(returned)
    assert "proba_1" in overall.drifted_columns


def test_each_column_reports_method_score_threshold_and_decision(drifted: DriftRun) -> None:
    overall = drifted.summary.overall
    price = overall.column("price")
    assert [(c.method, c.threshold, c.drifted) for c in price.checks] == [("wasserstein", 0.1, True)]
    assert price.checks[0].score > 1.0  # prices ×1.5: far more than a tenth of a standard deviation
    category = overall.column("category")
    assert [c.method for c in category.checks] == ["jensenshannon", "linf"]
    linf = category.checks[1]
    assert linf.drifted
    assert linf.score == pytest.approx(0.2, abs=0.03)  # a fifth of orders now in "drones"
    description = overall.column("description")
    assert description.checks[0].method == "abs_text_content_drift"
    assert description.checks[0].score > 0.9  # the classifier tells old from new words
    quantity = overall.column("quantity")
    assert not quantity.drifted
    assert quantity.checks[0].score < 0.1


def test_branches_are_compared_on_their_own_rows(
    drifted: DriftRun, drifted_records: list[dict[str, Any]]
) -> None:
    summary = drifted.summary
    routes = pd.Series([r["route"] for r in drifted_records]).value_counts()
    assert {b.scope for b in summary.branches} == {"reseller", "retail"}
    for branch in summary.branches:
        assert branch.n_current == routes[branch.scope]
        assert "route" not in {c.column for c in branch.columns}
    retail = summary.branch("retail")
    assert {"price", "category", "description"} <= set(retail.drifted_columns)
    reseller = summary.branch("reseller")  # about 270 rows: too few to tell noise from drift
    assert reseller.verdict.drift is None
    assert reseller.verdict.reasons[0].startswith("not enough data")


def test_fewer_rows_than_min_rows_gives_no_verdict(
    reference: pd.DataFrame, served_records: list[dict[str, Any]], columns: ColumnSet, tmp_path: Path
) -> None:
    current = current_frame(served_records[:120], columns)
    run = run_drift(reference, current, columns, policy=DriftPolicy(min_rows=200))
    assert run.summary.verdict.drift is None
    assert run.summary.verdict.reasons == ("not enough data: 120 current rows, at least 200 needed",)
    assert run.summary.overall.columns == ()
    page = run.save_html(tmp_path / "report.html").read_text()
    assert "not enough data: 120 current rows" in page


def test_columns_without_data_are_reported_not_fatal(
    reference: pd.DataFrame, served_records: list[dict[str, Any]], columns: ColumnSet
) -> None:
    current = current_frame(served_records, columns).drop(columns=["channel"])
    current["image_contrast"] = np.nan
    # One word in every text: TF-IDF (max_df=0.5) prunes it and Evidently's classifier has no
    # term left ("After pruning, no terms remain"), which would fail the whole report.
    current["description"] = "red"
    poor = reference.assign(description="red")
    run = run_drift(poor, current, columns, policy=DriftPolicy(min_rows=200), methods=DriftMethods())
    overall = run.summary.overall
    assert overall.column("channel").no_data == "missing in current"
    assert overall.column("image_contrast").no_data == "all values missing in current"
    assert overall.column("description").no_data == "too few distinct words for the text drift classifier"
    assert overall.column("price").status == "checked"
    assert overall.share_drifted is not None
    assert len(overall.checked) == len(columns) - 3


def test_a_reference_without_cascade_outputs_skips_outputs_and_branches(
    reference: pd.DataFrame, served_records: list[dict[str, Any]], columns: ColumnSet
) -> None:
    bare = reference.assign(prediction=None, proba_1=np.nan, route=None)
    run = run_drift(bare, current_frame(served_records, columns), columns, policy=POLICY)
    assert run.summary.overall.column("route").no_data == "all values missing in reference"
    assert run.summary.branches == ()
    assert run.summary.notes == (
        "no branch comparison: the reference has no routes (replay the cascade on it)",
    )
    assert run.summary.verdict.drift is False


def test_the_html_report_is_written_and_self_contained(drifted: DriftRun, tmp_path: Path) -> None:
    path = drifted.save_html(tmp_path / "reports" / "drift.html")
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 100_000  # Evidently inlines its scripts
    assert text.lstrip().lower().startswith("<html") or "<html" in text[:500].lower()
    assert "L-infinity distance" in text  # our stat test is part of Evidently's report
    assert drifted.save_html(tmp_path / "retail.html", scope="retail").stat().st_size > 100_000


def test_a_branch_is_decided_as_an_evidently_report_of_it_would(
    drifted: DriftRun, reference: pd.DataFrame, drifted_records: list[dict[str, Any]], columns: ColumnSet
) -> None:
    # Branches are decided by Evidently's stat-test functions, without a report: same numbers.
    current = current_frame(drifted_records, columns)
    ref, cur = (frame[frame["route"] == "retail"] for frame in (reference, current))
    branch_columns = columns.without(["route"])
    report = drift_module._run_report("retail", ref, cur, branch_columns, DriftMethods())
    expected = drift_module._read_checks(report)
    retail = drifted.summary.branch("retail")
    assert {c.column: list(c.checks) for c in retail.columns} == expected
    assert len(expected) == len(branch_columns)


def test_the_saved_report_has_a_title(drifted: DriftRun, tmp_path: Path) -> None:
    text = drifted.save_html(tmp_path / "overall.html").read_text(encoding="utf-8")
    assert "<title>Drift report: monitor — overall</title>" in text[:2_000]
    assert (
        "<title>Drift report: monitor — retail</title>"
        in drifted.save_html(tmp_path / "retail.html", scope="retail").read_text(encoding="utf-8")[:2_000]
    )


def test_an_empty_window_is_undecided_everywhere(reference: pd.DataFrame, columns: ColumnSet) -> None:
    run = run_drift(reference, current_frame([], columns), columns, policy=POLICY)
    assert run.summary.verdict.drift is None
    assert all(scope.verdict.drift is None for scope in run.summary.branches)
    assert run.summary.overall.verdict.reasons == ("not enough data: 0 current rows, at least 500 needed",)
