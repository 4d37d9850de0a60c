"""The model store: what is saved is read back, and anything changed since is refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import bentoml
import pytest

from skewguard.bentos.spec import FieldSpec, InputSpec
from skewguard.bentos.store import MODEL_FILE, PROFILE_FILE, list_models, load_model, save_model
from skewguard.errors import ArtifactError, ModelNotFoundError

SPEC = InputSpec(
    fields=(
        FieldSpec("price", "numeric", nullable=False),
        FieldSpec("channel", "categorical", categories=("app", "web")),
    )
)
GRAPH = bytes(range(256)) * 4  # the store never parses the graph; any bytes will do


def _name() -> str:
    return f"store-{uuid.uuid4().hex[:8]}"


def _save(name: str, *, graph: bytes = GRAPH) -> str:
    return save_model(
        name,
        graph,
        spec=SPEC,
        profile={"fields": {"price": {"median": 12.5}}},
        parity={"passed": True, "max_abs_diff": 3e-8},
        metrics={"accuracy": 0.91},
        labels={"stage": "test"},
    )


def _writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


def test_saved_model_reads_back_unchanged() -> None:
    name = _name()
    tag = _save(name)
    model = load_model(tag)
    assert model.tag == tag
    assert (model.name, model.version) == (name, tag.split(":")[1])
    assert model.onnx == GRAPH
    assert model.spec == SPEC
    assert model.profile == {"fields": {"price": {"median": 12.5}}}
    assert model.parity["max_abs_diff"] == 3e-8
    assert model.metrics == {"accuracy": 0.91}
    assert model.labels == {"stage": "test"}
    assert load_model(f"{name}:latest").tag == tag


def test_tampered_graph_is_refused() -> None:
    model = load_model(_save(_name()))
    stored = _writable(model.path / MODEL_FILE)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256") as caught:
        load_model(model.tag)
    assert MODEL_FILE in caught.value.message


def test_missing_file_is_refused() -> None:
    model = load_model(_save(_name()))
    (model.path / PROFILE_FILE).unlink()
    with pytest.raises(ArtifactError, match="missing") as caught:
        load_model(model.tag)
    assert PROFILE_FILE in caught.value.message


def test_unknown_tag_is_model_not_found() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        load_model(f"{_name()}:latest")
    assert caught.value.status_code == 404
    assert caught.value.field == "model"


def test_models_are_listed_newest_first_and_only_ours() -> None:
    name = _name()
    tags = [_save(name, graph=GRAPH + bytes([i])) for i in range(3)]
    with bentoml.models.create(f"{name}-foreign"):
        pass  # a BentoML model not written by skewguard
    assert list_models(name) == tags[::-1]
    everything = list_models()
    assert all(tag in everything for tag in tags)
    assert not any(tag.startswith(f"{name}-foreign:") for tag in everything)


def test_the_task_is_recorded_and_a_model_stored_without_one_reads_as_a_classifier() -> None:
    assert load_model(_save(_name())).task == "classification"
    stored = load_model(save_model(_name(), GRAPH, spec=SPEC, profile={}, parity={}, task="regression"))
    assert stored.task == "regression"
    info = stored.path / "model.yaml"
    info.write_text(info.read_text().replace("  task: regression\n", ""))  # as models were stored before
    assert "task:" not in info.read_text()
    assert load_model(stored.tag).task == "classification"
