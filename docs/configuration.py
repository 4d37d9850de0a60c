"""The settings reference: writes docs/configuration.md from the settings models, so it cannot drift.

    .venv/bin/python docs/configuration.py            # rewrite docs/configuration.md
    .venv/bin/python docs/configuration.py --check    # exit 1 when the committed file differs

Every field of ``skewguard.settings.Settings`` (read by every command) and of
``skewguard.gateway.settings.GatewaySettings`` (read by the gateway and the commands that
reach its state) becomes one row: the variable, its type and bounds, its default and its
description. A test runs ``render()`` and compares it with the committed file.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from skewguard.gateway.settings import GatewaySettings
from skewguard.settings import PREFIX, Settings

TARGET = Path(__file__).resolve().parent / "configuration.md"

HEADER = """\
# Configuration

skewguard reads its settings from `SKEWGUARD_*` environment variables, once, when a command
starts; a variable that is not set keeps its default. A value that does not fit is refused
at start-up with the variable's name and what was expected
(`error (invalid_config): Setting SKEWGUARD_PORT: ...`).

This page is generated from the settings models by `python docs/configuration.py`; a test
fails when it differs from a fresh generation.
"""

SECTIONS = (
    (
        "Every command",
        "`skewguard.settings.Settings`: where the state lives, the online store, the parity gate.",
        Settings,
    ),
    (
        "The gateway",
        "`skewguard.gateway.settings.GatewaySettings`, read by `skewguard serve`, `monitor`, `retrain` "
        "and `log prune` besides the settings above.",
        GatewaySettings,
    ),
)

OTHERS = (
    (
        "`SKEWGUARD_MODEL`",
        "a Bento's service",
        "the model a `bentoml serve` process serves (its Bento sets it)",
    ),
    ("`BENTOML_HOME`", "every command", "the model store; default `<SKEWGUARD_HOME>/bentoml`"),
    (
        "`PREFECT_HOME`",
        "`train`, `retrain`",
        "Prefect's runs and results; default `<SKEWGUARD_HOME>/prefect`",
    ),
    (
        "`DO_NOT_TRACK`, `BENTOML_DO_NOT_TRACK`, `PREFECT_SERVER_ANALYTICS_ENABLED`",
        "the libraries",
        "skewguard turns the libraries' telemetry off unless you set them",
    ),
)
"""Variables that are not settings of skewguard's own, and who reads them."""

FOOTER = """\
A cascade's own choices (its data, features, models, monitoring defaults and parity
tolerances) are not settings: they are keys of its [cascade file](cascade-file.md).
"""


def render() -> str:
    """The whole page."""
    parts = [HEADER]
    for title, intro, model in SECTIONS:
        parts.append(
            f"## {title}\n\n{intro}\n\n| variable | type | default | description |\n|---|---|---|---|"
        )
        parts.extend(_row(name, field) for name, field in _own_fields(model))
        parts.append("")
    parts.append("## Other variables\n\n| variable | read by | meaning |\n|---|---|---|")
    parts.extend(f"| {name} | {reader} | {meaning} |" for name, reader, meaning in OTHERS)
    parts += ["", FOOTER]
    return "\n".join(parts)


def _own_fields(model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    """The fields ``model`` declares itself (a subclass's inherited ones are its base's section)."""
    inherited: set[str] = set()
    for base in model.__mro__[1:]:
        if isinstance(base, type) and issubclass(base, BaseModel) and base is not BaseModel:
            inherited |= set(base.model_fields)
    for name, field in model.model_fields.items():
        if name not in inherited:
            yield name, field


def _row(name: str, field: FieldInfo) -> str:
    if not field.description:
        raise SystemExit(f"{PREFIX}{name.upper()} has no description; give its Field one.")
    kind = _type_of(field.annotation) + _bounds(field)
    return f"| `{PREFIX}{name.upper()}` | {kind} | {_default(field)} | {_cell(field.description)} |"


def _type_of(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        kinds = [_type_of(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        return " \\| ".join(kinds) + ", optional"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if annotation is SecretStr:
        return "string (secret)"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    symbols = {"gt": "> ", "ge": "≥ ", "lt": "< ", "le": "≤ "}
    found = []
    for item in field.metadata:
        found += [symbols[key] + _number(getattr(item, key)) for key in symbols if hasattr(item, key)]
        if getattr(item, "pattern", None):
            found.append(f"matching `{item.pattern}`")
    return f", {', '.join(found)}" if found else ""


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and value >= 100_000 else str(value)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "not set"
    if value == "":
        return "empty"
    return f"`{_number(value) if isinstance(value, int | float) and not isinstance(value, bool) else value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:2] == ["--check"]:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} differs from the settings models; run: python docs/configuration.py")
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
