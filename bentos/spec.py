"""The input spec: which raw fields a model takes, of which kind, with which domain.

It is inferred once, at packaging time, from the fitted pipeline and a data sample, stored
beside the ONNX graph as JSON, and read back by every server that validates requests.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import numpy as np
import pandas as pd

from skewguard.errors import ConfigError

FieldKind = Literal["numeric", "categorical", "text", "datetime", "image"]
FIELD_KINDS: tuple[str, ...] = get_args(FieldKind)
TEXT_VECTORIZERS = ("TfidfVectorizer", "CountVectorizer", "HashingVectorizer")
MAX_DOMAIN = 1_000


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One raw input field: its kind, whether null is accepted, and its training domain."""

    name: str
    kind: FieldKind
    nullable: bool = True
    categories: tuple[str, ...] = ()
    """Known values of a categorical field (empty for other kinds)."""


@dataclass(frozen=True, slots=True)
class OnlineFeature:
    """A field fetched from the feature store by entity key instead of sent by the client."""

    name: str
    ref: str
    """Feast reference, ``"view:feature"``."""
    default: float
    """Used when the entity is unknown (the training median)."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    """Every field the model's graph takes, plus how online features are looked up."""

    fields: tuple[FieldSpec, ...]
    entity_key: str | None = None
    online_features: tuple[OnlineFeature, ...] = field(default=())

    def __iter__(self) -> Iterator[FieldSpec]:
        return iter(self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def get(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fields": [
                {"name": f.name, "kind": f.kind, "nullable": f.nullable, "categories": list(f.categories)}
                for f in self.fields
            ],
            "entity_key": self.entity_key,
            "online_features": [
                {"name": o.name, "ref": o.ref, "default": o.default} for o in self.online_features
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        try:
            fields = tuple(
                FieldSpec(
                    name=str(f["name"]),
                    kind=_check_kind(f["kind"]),
                    nullable=bool(f["nullable"]),
                    categories=tuple(str(c) for c in f.get("categories", ())),
                )
                for f in data["fields"]
            )
            online = tuple(
                OnlineFeature(name=str(o["name"]), ref=str(o["ref"]), default=float(o["default"]))
                for o in data.get("online_features", ())
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"The stored input spec is malformed: {exc!r}.") from exc
        return cls(fields=fields, entity_key=data.get("entity_key"), online_features=online)


def _check_kind(kind: object) -> FieldKind:
    if kind not in FIELD_KINDS:
        raise ConfigError(f"Unknown field kind {kind!r}; expected one of {', '.join(FIELD_KINDS)}.")
    return cast(FieldKind, kind)


def infer_spec(
    pipeline: Any,
    X: pd.DataFrame,
    *,
    kinds: Mapping[str, FieldKind] | None = None,
    entity_key: str | None = None,
    online_features: Sequence[OnlineFeature] = (),
) -> InputSpec:
    """Infer the spec of every column ``pipeline`` was fitted on, from ``X`` and the pipeline.

    A string column consumed by a text vectorizer is ``text``; other string columns are
    ``categorical``. ``kinds`` overrides the inference per column.
    """
    names = [str(n) for n in getattr(pipeline, "feature_names_in_", X.columns)]
    missing = [n for n in names if n not in X.columns]
    if missing:
        raise ConfigError(
            f"The sample lacks columns the pipeline was fitted on: {_few(missing)}. "
            "Pass a sample with every training column."
        )
    text_columns = set(_text_columns(pipeline))
    overrides = dict(kinds or {})
    fields = []
    for name in names:
        kind = overrides.get(name) or _infer_kind(X[name], is_text=name in text_columns)
        categories: tuple[str, ...] = ()
        if kind == "categorical":
            values = X[name].dropna().astype(str).value_counts().index[:MAX_DOMAIN]
            categories = tuple(sorted(values))
        fields.append(FieldSpec(name=name, kind=_check_kind(kind), categories=categories))
    return InputSpec(fields=tuple(fields), entity_key=entity_key, online_features=tuple(online_features))


def _infer_kind(column: pd.Series, *, is_text: bool) -> FieldKind:
    if pd.api.types.is_datetime64_any_dtype(column):
        return "datetime"
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return "numeric"
    first = next((v for v in column if v is not None), None)
    if isinstance(first, np.ndarray | bytes | bytearray):
        return "image"
    return "text" if is_text else "categorical"


def _text_columns(estimator: Any) -> Iterator[str]:
    """Columns that a ColumnTransformer anywhere in ``estimator`` hands to a text vectorizer."""
    for _, step in getattr(estimator, "steps", []):
        yield from _text_columns(step)
    for _, transformer, columns in getattr(estimator, "transformers_", []):
        if _starts_with_vectorizer(transformer):
            yield from [columns] if isinstance(columns, str) else [str(c) for c in columns]
        else:
            yield from _text_columns(transformer)


def _starts_with_vectorizer(transformer: Any) -> bool:
    steps = getattr(transformer, "steps", None)
    first = steps[0][1] if steps else transformer
    return type(first).__name__ in TEXT_VECTORIZERS


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:5])
    return shown + (", ..." if len(names) > 5 else "")
