"""Log records and the training reference become the same flat, typed columns."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from returns_models import split_by_time, training_frame

from skewguard.bentos.images import decode_image
from skewguard.bentos.manifest import CascadeManifest
from skewguard.bentos.runner import OnnxRunner
from skewguard.errors import ConfigError
from skewguard.monitoring.frames import (
    Column,
    ColumnSet,
    current_frame,
    monitored_columns,
    reference_frame,
    reference_rows,
)
from skewguard.monitoring.replay import replay_cascade
from tests.monitoring.conftest import N_REFERENCE, log_records


def test_every_column_has_a_declared_kind(columns: ColumnSet) -> None:
    kinds = {column.name: column.kind for column in columns}
    assert kinds == {
        "price": "numeric",
        "quantity": "numeric",
        "orders_30d": "numeric",
        "return_rate_90d": "numeric",
        "account_age_days": "numeric",
        "category": "categorical",
        "channel": "categorical",
        "order_ts_hour": "numeric",
        "description": "text",
        "image_brightness": "numeric",
        "image_contrast": "numeric",
        "prediction": "categorical",
        "proba_1": "numeric",
        "route": "categorical",
    }
    assert "customer_id" not in kinds  # the entity key is an id, not a feature


def test_output_columns_can_be_left_out(cascade: CascadeManifest) -> None:
    names = monitored_columns(cascade.spec(), outputs=False).names
    assert "price" in names
    assert not {"prediction", "proba_1", "route"} & set(names)


def test_records_flatten_into_typed_columns(served_records: list[dict[str, Any]], columns: ColumnSet) -> None:
    frame = current_frame(served_records, columns)
    first = served_records[0]
    assert list(frame.columns) == list(columns.names)
    assert len(frame) == len(served_records)
    for column in columns:
        expected = "float64" if column.kind == "numeric" else "object"
        assert frame[column.name].dtype == expected, column.name
    row = frame.iloc[0]
    assert row["price"] == first["fields"]["price"]
    assert row["return_rate_90d"] == first["online_features"]["return_rate_90d"]
    assert row["image_brightness"] == first["fields"]["image"]["brightness"]
    assert row["image_contrast"] == first["fields"]["image"]["contrast"]
    assert row["order_ts_hour"] == pd.Timestamp(first["fields"]["order_ts"]).hour
    assert row["proba_1"] == first["probabilities"]["1"]
    assert row["prediction"] == str(first["prediction"])
    assert row["route"] == first["route"]


def test_reference_equals_the_log_of_the_same_rows(
    training: pd.DataFrame, cascade: CascadeManifest, columns: ColumnSet
) -> None:
    """Image stats from the training PNGs equal the gateway's log summary; outputs equal too."""
    rows = training.iloc[:300].reset_index(drop=True)
    outputs = replay_cascade(cascade, rows)
    from_training = reference_frame(rows, columns, outputs)
    from_log = current_frame(log_records(rows, outputs), columns)
    pd.testing.assert_frame_equal(from_training, from_log, check_exact=False, rtol=1e-12)


def test_decoded_images_give_the_same_stats_as_png_bytes(training: pd.DataFrame, columns: ColumnSet) -> None:
    rows = training.iloc[:50].reset_index(drop=True)
    decoded = rows.assign(image=[decode_image(png) for png in rows["image"]])
    image_columns = ["image_brightness", "image_contrast"]
    pd.testing.assert_frame_equal(
        reference_frame(rows, columns)[image_columns], reference_frame(decoded, columns)[image_columns]
    )


def test_reference_without_outputs_leaves_output_columns_empty(
    training: pd.DataFrame, columns: ColumnSet
) -> None:
    frame = reference_frame(training.iloc[:20], columns)
    assert frame[["prediction", "route"]].isna().all().all()
    assert frame["proba_1"].isna().all()
    assert frame["price"].notna().all()


def test_outputs_for_other_rows_are_refused(training: pd.DataFrame, cascade: CascadeManifest) -> None:
    columns = monitored_columns(cascade.spec())
    outputs = replay_cascade(cascade, training.iloc[:10])
    with pytest.raises(ConfigError, match="10 rows but the reference has 20"):
        reference_frame(training.iloc[:20], columns, outputs)


def test_absent_or_unreadable_values_become_missing(columns: ColumnSet) -> None:
    records: list[dict[str, Any]] = [
        {"fields": {"price": "not a number", "order_ts": "yesterday", "image": None}, "online_features": {}},
        {"fields": {"order_ts": 7.5 * 3600, "category": "toys"}, "probabilities": {"0": 0.25, "1": 0.75}},
    ]
    frame = current_frame(records, columns)
    assert math.isnan(frame.loc[0, "price"])
    assert math.isnan(frame.loc[0, "order_ts_hour"])
    assert math.isnan(frame.loc[0, "image_brightness"])
    assert frame.loc[0, "category"] is None
    assert frame.loc[1, "order_ts_hour"] == 7.0  # epoch seconds
    assert frame.loc[1, "proba_1"] == 0.75
    assert frame["route"].isna().all()


def test_reference_rows_are_the_pipelines_train_slice(demo: Any) -> None:
    frame = training_frame(demo)
    expected, _ = split_by_time(frame)
    chosen = reference_rows(frame, "order_ts", max_rows=len(frame))
    pd.testing.assert_frame_equal(chosen, expected.reset_index(drop=True))
    sampled = reference_rows(frame, "order_ts", max_rows=100)
    assert len(sampled) == 100
    assert sampled["order_ts"].is_monotonic_increasing
    assert sampled["order_ts"].max() <= expected["order_ts"].max()


def test_replay_routes_and_answers_like_the_gateway(training: pd.DataFrame, cascade: CascadeManifest) -> None:
    rows = training.iloc[N_REFERENCE : N_REFERENCE + 200].reset_index(drop=True)
    rows.loc[:9, "return_rate_90d"] = np.nan  # expired features: the gateway serves defaults
    outputs = replay_cascade(cascade, rows)
    router = OnnxRunner.load(cascade.router.tag)
    p_router = [a["probabilities"]["1"] for a in router.predict_rows(_request_rows(rows, router, cascade))]
    expected = ["reseller" if p >= cascade.router.threshold else "retail" for p in p_router]
    assert list(outputs.route) == expected
    assert {"reseller", "retail"} <= set(outputs.route)
    for i in (0, 1, 50):
        branch = OnnxRunner.load(cascade.branches[outputs.route[i]])
        answer = branch.predict_rows(_request_rows(rows.iloc[[i]], branch, cascade))[0]
        assert outputs.prediction[i] == answer["label"]
        assert outputs.probabilities[i] == pytest.approx(answer["probabilities"])


def _request_rows(rows: pd.DataFrame, runner: OnnxRunner, cascade: CascadeManifest) -> list[dict[str, Any]]:
    """Rows as a client would send them to one model, defaults filled in for missing features."""
    defaults = {f.name: f.default for f in cascade.spec().online_features}
    out = []
    for _, row in rows.iterrows():
        values = {name: row[name] for name in runner.spec.names}
        for name, default in defaults.items():
            if name in values and pd.isna(values[name]):
                values[name] = default
        out.append(values)
    return out


def test_a_column_can_be_dropped_from_the_set(columns: ColumnSet) -> None:
    assert "route" not in columns.without(["route"]).names
    assert columns.get("price") == Column("price", "numeric", "price")
