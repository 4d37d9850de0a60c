"""The cascade file: what a user writes is checked; messages name the file, the key, its line, the fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from returns_data import generate_demo_data

from skewguard.bentos.store import list_models
from skewguard.errors import ConfigError
from skewguard.pipeline.cascade_file import load_cascade_file, schema
from skewguard.pipeline.flows import train_cascade
from tests.conftest import EXAMPLES, returns_project, write_cascade_file

MINIMAL = """\
name: tiny
task: classification
data:
  path: data.csv
  timestamp: ts
  target: y
branches:
  model: {pipeline: models:make}
"""


def _write(folder: Path, text: str, name: str = "cascade.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_cascade_file(path)
    return caught.value


@pytest.mark.parametrize("example", ["returns", "bike-hires"])
def test_the_shipped_examples_validate_against_the_printed_schema(example: str) -> None:
    document = yaml.safe_load((EXAMPLES / example / "cascade.yaml").read_text())
    jsonschema.validate(document, schema())
    loaded = load_cascade_file(EXAMPLES / example / "cascade.yaml")
    assert loaded.spec.name == example


def test_an_unknown_key_names_the_file_its_line_and_the_keys_expected(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("  target: y\n", "  target: y\n  holdot: 0.3\n"))
    error = _error(path)
    assert error.field == "data.holdot"
    assert f"{path}:7: data.holdot: unknown key 'holdot'" in error.message
    assert "columns, holdout, path, target, timestamp" in error.message
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema())  # an editor flags it too


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("task: classification", "task: ranking"), "task", "'classification' or 'regression'"),
        (("  target: y\n", "  target: y\n  holdout: lots\n"), "data.holdout", "valid number"),
        (("name: tiny", "name: Tiny Cascade"), "name", "pattern"),
        (("  path: data.csv\n", ""), "data.path", "required and missing"),
        (("{pipeline: models:make}", "{pipeline: models.make}"), "branches.model.pipeline", "pattern"),
    ],
)
def test_a_wrong_type_or_value_names_the_key(
    tmp_path: Path, change: tuple[str, str], key: str, words: str
) -> None:
    error = _error(_write(tmp_path, MINIMAL.replace(*change)))
    assert error.field == key
    assert f": {key}: " in error.message
    assert words in error.message


def test_routes_must_name_the_branches_and_a_threshold_needs_two_classes(tmp_path: Path) -> None:
    router = "router:\n  pipeline: models:make\n  target: r\n  routes: {1: a, 0: c}\n"
    text = MINIMAL.replace(
        "branches:\n  model: {pipeline: models:make}\n",
        router + "branches:\n  a: {pipeline: models:make}\n  b: {pipeline: models:make}\n",
    )
    error = _error(_write(tmp_path, text))
    assert error.field == "router.routes"
    assert "['a', 'c'] but the branches are ['a', 'b']" in error.message
    assert ":10: router.routes" in error.message
    three = text.replace("{1: a, 0: c}", "{x: a, y: b, z: b}\n  threshold: 0.4")
    error = _error(_write(tmp_path, three))
    assert error.field == "router.threshold"
    assert "Remove the threshold" in error.message
    two = MINIMAL.replace("branches:\n  model:", "branches:\n  one: {pipeline: models:make}\n  model:")
    assert _error(_write(tmp_path, two)).field == "branches"


def test_not_yaml_or_not_a_mapping_is_refused(tmp_path: Path) -> None:
    assert "not valid YAML" in _error(_write(tmp_path, "name: [unclosed\n")).message
    assert "expected a mapping" in _error(_write(tmp_path, "- a\n- b\n")).message
    assert "Cannot read" in _error(tmp_path / "missing.yaml").message


def _project(folder: Path) -> Path:
    return returns_project(folder, generate_demo_data(n_orders=400, n_customers=60, seed=2))


def _fails_to_train(path: Path) -> ConfigError:
    before = set(list_models())
    with pytest.raises(ConfigError) as caught:
        train_cascade(path)
    assert set(list_models()) == before  # nothing half-written in the model store
    return caught.value


@pytest.mark.slow
def test_a_missing_column_names_the_key_and_lists_the_columns(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    error = _fails_to_train(
        write_cascade_file(
            project, data={"path": "data/orders.parquet", "timestamp": "ordered_at", "target": "returned"}
        )
    )
    assert error.field == "data.timestamp"
    assert "column 'ordered_at' is not in the data (orders.parquet)" in error.message
    assert "'order_ts'" in error.message


@pytest.mark.slow
def test_an_unimportable_callable_and_a_callable_that_is_no_pipeline_are_named(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    (project / "broken_models.py").write_text("import not_a_module_anywhere\n")
    (project / "odd_models.py").write_text("def make():\n    return {'not': 'a pipeline'}\n")
    spec = yaml.safe_load((project / "cascade.yaml").read_text())
    branches = {"reseller": {"pipeline": "broken_models:make"}, "retail": spec["branches"]["retail"]}
    error = _fails_to_train(write_cascade_file(project, branches=branches))
    assert error.field == "branches.reseller.pipeline"
    assert "cannot import 'broken_models'" in error.message
    assert "not_a_module_anywhere" in error.message
    branches = {"reseller": {"pipeline": "odd_models:make"}, "retail": spec["branches"]["retail"]}
    error = _fails_to_train(write_cascade_file(project, branches=branches))
    assert "returned a dict, not a scikit-learn estimator" in error.message
    branches = {"reseller": {"pipeline": "returns_models:nope"}, "retail": spec["branches"]["retail"]}
    assert "has no callable 'nope'" in _fails_to_train(write_cascade_file(project, branches=branches)).message


@pytest.mark.slow
def test_a_feast_reference_that_does_not_exist_is_named(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    features = {
        "repository": "feature_repo",
        "entity_key": "customer_id",
        "refs": ["customer_stats:orders_31d"],
    }
    error = _fails_to_train(write_cascade_file(project, features=features))
    assert error.field == "features.refs"
    assert "has no feature 'orders_31d'" in error.message


def test_modules_of_two_projects_with_one_name_do_not_mix(tmp_path: Path) -> None:
    """A user's ``models.py`` beside each cascade file: each file gets its own."""
    for name, answer in (("a", 1), ("b", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "models.py").write_text(f"def make():\n    return {answer}\n")
        _write(tmp_path / name, MINIMAL)
    answers = [
        load_cascade_file(tmp_path / name / "cascade.yaml").load_callable("k", "models:make")()
        for name in "ab"
    ]
    assert answers == [1, 2]
    sys.modules.pop("models", None)


def test_schema_is_json_and_describes_every_section() -> None:
    document = schema()
    json.dumps(document)
    assert document["$schema"].endswith("2020-12/schema")
    assert set(document["properties"]) >= {
        "name",
        "task",
        "data",
        "features",
        "router",
        "branches",
        "monitoring",
    }
    assert document["additionalProperties"] is False
