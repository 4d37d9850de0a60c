"""The demo multimodal model: every modality inside one graph that passes the parity gate."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from returns_data import DemoData, generate_demo_data
from returns_models import (
    ONLINE,
    feature_columns,
    make_pipeline,
    split_by_time,
    train_and_package,
    training_frame,
)

from skewguard.bentos.store import load_model


@pytest.fixture(scope="module")
def data() -> DemoData:
    return generate_demo_data(n_orders=3_000, n_customers=300, seed=7)


def test_training_frame_uses_only_past_snapshots(data: DemoData) -> None:
    frame = training_frame(data)
    stats = data.customer_stats
    row = frame.iloc[len(frame) // 2]
    history = stats[
        (stats["customer_id"] == row["customer_id"]) & (stats["event_timestamp"] <= row["order_ts"])
    ]
    latest = history.sort_values("event_timestamp").iloc[-1]
    assert row["return_rate_90d"] == latest["return_rate_90d"]
    assert frame["image"].iloc[0].shape == (32, 32, 3)
    train, test = split_by_time(frame)
    assert train["order_ts"].max() <= test["order_ts"].min()


@pytest.mark.slow
@pytest.mark.parametrize("head", ["hgb", "lr"])
def test_demo_model_packages_with_every_modality(data: DemoData, head: str) -> None:
    stored = load_model(train_and_package(data, head=head, name=f"returns-{head}"))  # type: ignore[arg-type]
    kinds = {field.name: field.kind for field in stored.spec}
    assert kinds["order_ts"] == "datetime"
    assert kinds["description"] == "text"
    assert kinds["image"] == "image"
    assert kinds["category"] == "categorical"
    assert stored.parity["passed"] is True
    assert stored.parity["n_probes"] > 300
    assert stored.metrics["roc_auc"] > 0.6
    assert stored.spec.entity_key == "customer_id"
    assert {o.name for o in stored.spec.online_features} == set(ONLINE)
    profile = stored.profile["fields"]
    for online in stored.spec.online_features:
        assert online.default == pytest.approx(profile[online.name]["median"])
    assert sum(profile["order_ts"]["hour_counts"]) == profile["order_ts"]["count"]
    assert np.isfinite(pd.Series(profile["image"]["channel_means"])).all()


def test_no_image_pipeline_reads_no_image(data: DemoData) -> None:
    columns = feature_columns(image=False)
    assert "image" not in columns
    assert feature_columns() == [*columns, "image"]
    frame = training_frame(data).drop(columns=["image"])  # the pipeline must not need the column
    fitted = make_pipeline("lr", image=False).fit(frame[columns], frame["returned"])
    assert list(fitted.feature_names_in_) == columns


@pytest.mark.slow
@pytest.mark.parametrize("head", ["hgb", "lr"])
def test_no_image_model_has_no_image_input_and_passes_the_gate(data: DemoData, head: str) -> None:
    tag = train_and_package(data, head=head, name=f"returns-text-{head}", image=False)  # type: ignore[arg-type]
    stored = load_model(tag)
    assert "image" not in stored.spec.names
    assert {field.kind for field in stored.spec} == {"numeric", "categorical", "datetime", "text"}
    graph = onnx.load_from_string(stored.onnx)
    assert "image" not in {graph_input.name for graph_input in graph.graph.input}
    assert "image" not in stored.profile["fields"]
    assert stored.parity["passed"] is True
    assert stored.parity["n_probes"] > 100
    assert stored.metrics["roc_auc"] > 0.6
