"""train_cascade(image=False): a tabular+text cascade beside the image one, never from its cache."""

from __future__ import annotations

from typing import Any

import pytest

from skewguard.bentos.manifest import champion
from skewguard.bentos.store import load_model
from skewguard.pipeline.flows import train_cascade

SHARED = {"build_training_set"}  # the training set is the same rows, images included


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    home = tmp_path_factory.mktemp("flow-no-image-home")
    params: dict[str, Any] = {"n_orders": 2_000, "n_customers": 200, "seed": 5, "head": "lr"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKEWGUARD_HOME", str(home))
        image = train_cascade("returns", **params)
        text = train_cascade("returns-text", **params, image=False)
    return {"image": image, "text": text}


@pytest.mark.slow
def test_no_image_run_reuses_no_model_step_of_the_image_run(runs: dict[str, dict[str, Any]]) -> None:
    states = runs["text"]["task_states"]
    cached = {task for task, state in states.items() if state == "Cached"}
    assert cached == SHARED, states
    assert runs["text"]["status"] == "champion"


@pytest.mark.slow
def test_no_image_cascade_has_no_image_input_anywhere(runs: dict[str, dict[str, Any]]) -> None:
    text, image = champion("returns-text"), champion("returns")
    assert text is not None
    assert image is not None
    for tag in text.model_tags().values():
        stored = load_model(tag)
        assert "image" not in stored.spec.names
        assert stored.parity["passed"] is True
    assert all("image" in load_model(tag).spec.names for tag in image.model_tags().values())
    assert 0.5 < text.metrics["cascade"]["overall"]["roc_auc"] <= 1.0
