"""A tabular+text cascade beside the image one, from one project: a second file, none of its cache."""

from __future__ import annotations

from typing import Any

import pytest
from returns_data import generate_demo_data

from skewguard.bentos.manifest import champion
from skewguard.bentos.store import load_model
from skewguard.pipeline.flows import train_cascade
from tests.conftest import returns_project, write_cascade_file

LINEAR = {"pipeline": "returns_models:make_linear"}
TEXT = {"pipeline": "returns_models:make_text_linear"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    home = tmp_path_factory.mktemp("flow-no-image-home")
    project = returns_project(home / "project", generate_demo_data(n_orders=2_000, n_customers=200, seed=5))
    data = {"path": "data/orders.parquet", "timestamp": "order_ts", "target": "returned"}
    columns = ["price", "quantity", "category", "channel", "order_ts", "description"]
    router = {
        "pipeline": LINEAR["pipeline"],
        "target": "is_reseller",
        "threshold": 0.5,
        "routes": {1: "reseller", 0: "retail"},
    }
    image = write_cascade_file(
        project, name="returns-image", router=router, branches={"reseller": LINEAR, "retail": LINEAR}
    )
    text = write_cascade_file(
        project,
        "text.yaml",
        name="returns-text",
        data={**data, "columns": columns},
        router={**router, "pipeline": TEXT["pipeline"]},
        branches={"reseller": TEXT, "retail": TEXT},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKEWGUARD_HOME", str(home))
        return {"image": train_cascade(image), "text": train_cascade(text)}


@pytest.mark.slow
def test_no_image_run_reuses_no_model_step_of_the_image_run(runs: dict[str, dict[str, Any]]) -> None:
    states = runs["text"]["task_states"]
    cached = {task for task, state in states.items() if state == "Cached"}
    assert cached == set(), states  # another cascade: its own Feast project, so its own training set
    assert runs["text"]["status"] == "champion"


@pytest.mark.slow
def test_no_image_cascade_has_no_image_input_anywhere(runs: dict[str, dict[str, Any]]) -> None:
    text, image = champion("returns-text"), champion("returns-image")
    assert text is not None
    assert image is not None
    for tag in text.model_tags().values():
        stored = load_model(tag)
        assert "image" not in stored.spec.names
        assert stored.parity["passed"] is True
    assert all("image" in load_model(tag).spec.names for tag in image.model_tags().values())
    assert 0.5 < text.metrics["cascade"]["overall"]["roc_auc"] <= 1.0
