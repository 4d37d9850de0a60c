"""docs/cascade-file.md documents every key of the cascade file's JSON Schema, and its examples validate."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from skewguard.errors import ConfigError
from skewguard.pipeline.cascade_file import load_cascade_file, schema
from tests.docs.conftest import DOCS

PAGE = DOCS / "cascade-file.md"
_YAML = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ROW_KEY = re.compile(r"^\| `([\w.<>]+)` \|", re.MULTILINE)
_BASE = {
    "name": "base",
    "task": "classification",
    "data": {"path": "rows.csv", "timestamp": "t", "target": "y"},
    "branches": {"main": {"pipeline": "models:make_model"}},
}
"""A minimal valid file a fragment's top-level keys are laid over."""


def _keys(node: dict[str, Any], prefix: str, defs: dict[str, Any]) -> Iterator[str]:
    """Every key path of a schema node: sections followed through $ref, optional and mapping values."""
    for option in [node, *node.get("anyOf", [])]:
        if "$ref" in option:
            yield from _keys(defs[option["$ref"].rsplit("/", 1)[1]], prefix, defs)
        values = option.get("additionalProperties")
        if isinstance(values, dict) and ("$ref" in values or "properties" in values):
            yield from _keys(values, f"{prefix}<name>.", defs)
        for key, child in option.get("properties", {}).items():
            yield prefix + key
            yield from _keys(child, f"{prefix}{key}.", defs)


def schema_keys() -> set[str]:
    found = schema()
    return set(_keys(found, "", found.get("$defs", {})))


def test_every_key_of_the_schema_is_documented_and_nothing_else() -> None:
    documented = set(_ROW_KEY.findall(PAGE.read_text(encoding="utf-8")))
    expected = schema_keys()
    assert expected - documented == set(), "keys of the schema missing from docs/cascade-file.md"
    assert documented - expected == set(), "docs/cascade-file.md documents keys the schema does not have"


def test_the_key_walk_sees_nested_sections() -> None:
    keys = schema_keys()
    assert {"data.path", "router.threshold", "branches.<name>.pipeline", "monitoring.time_field"} <= keys


def _examples() -> list[dict[str, Any]]:
    blocks = _YAML.findall(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    return [yaml.safe_load(block) for block in blocks]


@pytest.mark.parametrize("example", _examples(), ids=lambda example: ",".join(example))
def test_every_example_is_valid_against_the_schema(example: dict[str, Any]) -> None:
    candidate = example if "name" in example else _BASE | example
    as_json = json.loads(json.dumps(candidate))  # what an editor validates: keys are text
    jsonschema.validate(as_json, schema())


def test_the_whole_file_examples_load(tmp_path: Path) -> None:
    whole = [example for example in _examples() if "name" in example]
    assert len(whole) >= 2
    for i, example in enumerate(whole):
        path = tmp_path / f"cascade-{i}.yaml"
        path.write_text(yaml.safe_dump(example))
        assert load_cascade_file(path).spec.name == example["name"]


def test_the_documented_error_is_the_one_a_typo_gets(tmp_path: Path) -> None:
    page = PAGE.read_text(encoding="utf-8")
    example = next(e for e in _examples() if e.get("name") == "returns")
    example["router"]["treshold"] = example["router"].pop("threshold")
    path = tmp_path / "cascade.yaml"
    path.write_text(yaml.safe_dump(example, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_cascade_file(path)
    message = caught.value.message.split(": ", 2)[2]  # after the file and the line
    assert " ".join(message.split()) in " ".join(page.split())
