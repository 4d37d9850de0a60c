"""The drift job end to end: records and a training set in; HTML, JSON and metrics files out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from skewguard.bentos.manifest import CascadeManifest
from skewguard.errors import ConfigError
from skewguard.monitoring.job import DriftJobResult, check_drift, load_reference
from skewguard.monitoring.verdict import DriftPolicy
from tests.monitoring.conftest import N_REFERENCE, WATCHED

COLUMN_KEYS = {"kind", "status", "reason", "drifted", "checks"}
CHECK_KEYS = {"method", "score", "threshold", "drifted"}


@pytest.fixture(scope="module")
def result(
    tmp_path_factory: pytest.TempPathFactory,
    training: pd.DataFrame,
    drifted_records: list[dict[str, Any]],
    cascade: CascadeManifest,
) -> DriftJobResult:
    other = [{**drifted_records[0], "cascade": "another"}]  # not ours: ignored
    return check_drift(
        [*other, *drifted_records],
        training,
        cascade,
        tmp_path_factory.mktemp("drift"),
        policy=DriftPolicy(watched=WATCHED),
    )


def test_the_job_writes_a_summary_of_our_shape(result: DriftJobResult) -> None:
    summary = json.loads(result.summary_json.read_text())
    assert set(summary) == {
        "format",
        "cascade",
        "created_at",
        "window",
        "verdict",
        "overall",
        "branches",
        "notes",
    }
    assert summary["cascade"] == "monitor"
    assert summary["verdict"]["drift"] is True
    assert all(isinstance(reason, str) for reason in summary["verdict"]["reasons"])
    overall = summary["overall"]
    assert set(overall) == {"n_reference", "n_current", "share_drifted", "verdict", "columns"}
    assert overall["n_current"] == 2_000  # the record of another cascade is left out
    assert 0 < overall["share_drifted"] <= 1
    for column in overall["columns"].values():
        assert set(column) == COLUMN_KEYS
        for check in column["checks"]:
            assert set(check) == CHECK_KEYS
    assert overall["columns"]["price"]["checks"][0]["drifted"] is True
    assert set(summary["branches"]) == {"reseller", "retail"}
    assert summary["window"]["start"] < summary["window"]["end"]


def test_the_reference_is_a_sample_of_the_train_slice(result: DriftJobResult, training: pd.DataFrame) -> None:
    assert len(training) * 0.8 > N_REFERENCE  # the oldest 80 %: 5,600 rows, sampled down
    assert result.summary.overall.n_reference == N_REFERENCE
    assert {"price", "category", "description"} <= set(result.summary.overall.drifted_columns)


def test_the_job_writes_the_html_report(result: DriftJobResult) -> None:
    assert result.html.name == "drift-report.html"
    assert result.html.stat().st_size > 100_000


def test_the_metrics_file_holds_a_gauge_per_column_and_the_share(result: DriftJobResult) -> None:
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(result.metrics.read_text())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"cascade": "monitor", **labels}.items())))]

    overall = result.summary.overall
    price = overall.column("price").checks[0]
    check = {"scope": "overall", "column": "price", "method": "wasserstein"}
    assert value("skewguard_drift_score", **check) == pytest.approx(price.score)
    assert value("skewguard_drift_detected", **check) == float(price.drifted)
    assert value("skewguard_drift_share", scope="overall") == pytest.approx(overall.share_drifted)
    assert value("skewguard_drift_rows", scope="overall", dataset="current") == 2_000
    assert value("skewguard_drift_decided", scope="reseller") == 0
    assert value("skewguard_drift_verdict", scope="run") == float(bool(result.summary.verdict.drift))


def test_the_reference_set_is_read_where_the_manifest_says_and_only_unchanged(
    tmp_path: Path, training: pd.DataFrame, cascade: CascadeManifest
) -> None:
    path = tmp_path / "training" / "monitor.parquet"
    path.parent.mkdir()
    training.iloc[:100].to_parquet(path)
    recorded = cascade.model_copy(
        update={
            "reference": cascade.reference.model_copy(
                update={"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            )
        }  # type: ignore[union-attr]
    )
    loaded = load_reference(recorded, tmp_path)  # a path relative to the home
    assert len(loaded) == 100
    with pytest.raises(ConfigError, match="changed since training") as changed:
        load_reference(cascade, tmp_path)  # recorded with another digest
    assert changed.value.field == "reference"
    with pytest.raises(ConfigError, match="cannot be read"):
        load_reference(recorded, tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="records no reference set"):
        load_reference(cascade.model_copy(update={"reference": None}), tmp_path)
