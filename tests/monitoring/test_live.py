"""The live comparison as a job: the champion's manifest, the log's records, the labels joined; the report."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from skewguard.bentos.manifest import CascadeManifest, promote, save_manifest
from skewguard.monitoring.job import check_drift
from skewguard.monitoring.live import SECTION_ID, add_to_report, compare_served
from skewguard.monitoring.verdict import DriftPolicy
from tests.monitoring.conftest import N_REFERENCE, WATCHED

SHADOW = "cascade-x:shadow"


@pytest.fixture(scope="module")
def promoted(cascade: CascadeManifest) -> str:
    """The session's monitored cascade as the champion of a name of its own, its target recorded."""
    name = f"live{uuid.uuid4().hex[:8]}"
    promote(save_manifest(cascade.model_copy(update={"name": name, "target": "returned"})))
    return name


def _shadowed(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The records as ``name``'s, each with a shadow that answered exactly as the champion did."""
    return [
        record
        | {
            "cascade": name,
            "request_id": f"q{i}",
            "candidate": {
                "variant": "shadow",
                "version": SHADOW,
                **{k: record[k] for k in ("prediction", "probabilities", "route", "flags")},
                "latency_ms": 1.0,
            },
        }
        for i, record in enumerate(records)
    ]


def test_labels_join_by_the_cascades_entity_key_and_event_time(
    promoted: str, served_records: list[dict[str, Any]], training: pd.DataFrame
) -> None:
    records = _shadowed(served_records, promoted)
    rows = training.iloc[N_REFERENCE:].reset_index(drop=True)
    labels = rows[["customer_id", "order_ts", "returned"]].sample(frac=1.0, random_state=3)  # any order
    found = compare_served(promoted, records, labels=labels, resamples=100)
    assert (found.mode, found.candidate.version, found.labeled_rows) == ("shadow", SHADOW, len(records))
    direct = roc_auc_score(rows["returned"], [r["probabilities"]["1"] for r in served_records])
    assert found.champion.metric is not None
    assert found.champion.metric.value == pytest.approx(direct)  # each label met its own row
    assert found.gain is not None
    assert found.gain.value == 0.0
    assert found.agreement == 1.0


def test_without_labels_the_comparison_has_no_metric(
    promoted: str, served_records: list[dict[str, Any]]
) -> None:
    found = compare_served(promoted, _shadowed(served_records, promoted), labels=None)
    assert (found.metric, found.gain, found.labeled_rows) == (None, None, 0)


def test_the_drift_report_gets_a_section_and_the_summary_a_key(
    tmp_path: Path, promoted: str, served_records: list[dict[str, Any]]
) -> None:
    found = compare_served(promoted, _shadowed(served_records[:300], promoted))
    page, summary = tmp_path / "drift-report.html", tmp_path / "drift-summary.json"
    page.write_text("<html><body><h1>report</h1></body></html>")
    summary.write_text(json.dumps({"verdict": {"drift": False}}))
    add_to_report(tmp_path, page, summary, found)
    html = page.read_text()
    assert html.index(f"id='{SECTION_ID}'") < html.index("<h1>report</h1>")
    assert "agreement: 100.00%" in html
    written = json.loads(summary.read_text())
    assert written["verdict"] == {"drift": False}
    assert written["live_comparison"]["candidate"]["version"] == SHADOW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift-report.html", "drift-summary.json"]


def test_rows_a_canary_answered_are_left_out_of_the_drift_check(
    tmp_path: Path, training: pd.DataFrame, served_records: list[dict[str, Any]], cascade: CascadeManifest
) -> None:
    canary = [r | {"variant": "canary"} for r in served_records[:700]]
    result = check_drift(
        [*canary, *served_records[700:]],
        training,
        cascade,
        tmp_path,
        policy=DriftPolicy(watched=WATCHED),
        replay_outputs=False,
    )
    assert result.summary.overall.n_current == len(served_records) - 700
