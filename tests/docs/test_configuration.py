"""docs/configuration.md is what the settings models say, every setting with a description."""

from __future__ import annotations

import copy

import pytest

from skewguard.gateway.settings import GatewaySettings
from skewguard.settings import PREFIX
from tests.docs.conftest import DOCS, load_script


def test_the_committed_page_is_a_fresh_generation() -> None:
    generated = load_script("configuration").render()
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == generated, "docs/configuration.md is stale: run python docs/configuration.py"


def test_every_setting_is_on_the_page_with_its_default() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    for name, field in GatewaySettings.model_fields.items():
        variable = PREFIX + name.upper()
        assert variable in rows, f"{variable} is not documented"
        assert field.description, f"{variable} has no description in its settings model"


def test_a_setting_without_a_description_stops_the_generator() -> None:
    script = load_script("configuration")
    field = copy.copy(GatewaySettings.model_fields["port"])
    field.description = None
    with pytest.raises(SystemExit, match="SKEWGUARD_PORT has no description"):
        script._row("port", field)
