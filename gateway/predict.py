"""One predict request through a cascade: validate → online features → guard → route → answer.

HTTP-free: the app hands in the parsed JSON body and gets back the response rows and the
prediction-log records. Bad input raises an ``InputError`` that names the field.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skewguard.bentos.images import MAX_REQUEST_PIXELS
from skewguard.bentos.inputs import Batch
from skewguard.errors import FeatureStoreUnavailable, InputError
from skewguard.gateway.cascades import LoadedCascade
from skewguard.gateway.decoding import encode_request
from skewguard.gateway.features import FeatureSource
from skewguard.gateway.guard import SkewFlag

DEFAULT_MAX_ROWS = 1_000
ENTITY_KEY_MIN, ENTITY_KEY_MAX = -(2**63), 2**63 - 1
"""Feast keys are int64: a larger key failed the whole batched read, a 500 for every request in it."""


@dataclass(frozen=True, slots=True)
class PredictOptions:
    """Per-gateway choices that shape every request."""

    max_rows: int = DEFAULT_MAX_ROWS
    degrade_on_feature_store_error: bool = True
    budget_seconds: float = 1.0
    max_request_pixels: int = MAX_REQUEST_PIXELS


@dataclass(slots=True)
class Outcome:
    """The answer rows, plus what the log and the metrics need."""

    rows: list[dict[str, Any]]
    raw_rows: list[dict[str, Any]]
    batch: Batch
    flags: list[list[SkewFlag]] = field(default_factory=list)


def parse_rows(
    body: Any, max_rows: int, *, accepted: Collection[str] | None = None, fetched: Collection[str] = ()
) -> list[dict[str, Any]]:
    """``{"rows": [...]}`` or one row object → a list of row objects.

    With ``accepted`` (the fields a client sends), any other key is a 422 naming it and listing
    only those fields; the names in ``fetched`` (online features) are left for the caller to
    refuse with a message of their own. A key JSON can hold but Unicode cannot (a lone
    surrogate, ``"\\ud800"``) is named as it was escaped.
    """
    if isinstance(body, Mapping) and "rows" in body:
        extra = sorted(set(body) - {"rows"})
        if extra:
            raise InputError(
                f"Unexpected top-level field {extra[0]!r}; send {{'rows': [...]}}.", field=extra[0]
            )
        rows = body["rows"]
        if not isinstance(rows, list) or not rows:
            raise InputError("'rows' must be a non-empty list of row objects.", field="rows")
    elif isinstance(body, Mapping):
        rows = [body]
    else:
        raise InputError("Expected a JSON object: one row, or {'rows': [...]}.", field="body")
    if len(rows) > max_rows:
        raise InputError(f"{len(rows)} rows in one request; at most {max_rows} are accepted.", field="rows")
    known = None if accepted is None else {*accepted, *fetched}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InputError(
                f"Row {i}: expected an object of fields, got {type(row).__name__}.", field="rows"
            )
        if known is not None and not known.issuperset(row):
            _refuse_unexpected(i, sorted(set(row) - known), accepted or ())
    return [dict(row) for row in rows]


def _refuse_unexpected(i: int, extra: list[str], accepted: Collection[str]) -> None:
    raise InputError(
        f"Row {i}: unexpected field {extra[0]!r}; send only {', '.join(sorted(accepted))}.", field=extra[0]
    )


async def predict(
    cascade: LoadedCascade, body: Any, features: FeatureSource, options: PredictOptions
) -> Outcome:
    """Run the cascade over the request's rows."""
    deadline = time.monotonic() + options.budget_seconds
    key = cascade.manifest.entity_key
    sent = cascade.request_fields if key is None else (*cascade.request_fields, key)
    rows = parse_rows(body, options.max_rows, accepted=sent, fetched=cascade.manifest.feature_refs)
    keys = _entity_keys(cascade, rows)
    values, store_down = await _fetch(features, keys, options)
    merged, missing = _merge(cascade, rows, values)
    batch = await encode_request(
        cascade.spec,
        merged,
        allowed_extra=(key or "",),
        max_pixels=options.max_request_pixels,
        deadline=deadline,
    )
    flags = cascade.guard.check(batch, missing_online=missing)
    if store_down:
        flags = [
            [*row, SkewFlag("feature_store_unavailable", "*", "online features defaulted")] for row in flags
        ]
    else:
        _flag_unknown_entities(cascade, keys, values, flags)
    for row_flags in flags:
        rejected = cascade.guard.rejected(row_flags)
        if rejected is not None:
            raise InputError(f"Rejected by the skew guard: {rejected.detail}", field=rejected.field)
    results = await cascade.runner.run(batch, merged, deadline)
    versions = cascade.versions
    result = []
    for i, row in enumerate(results):
        online = {name: merged[i][name] for name in cascade.manifest.feature_refs}
        result.append(
            {
                "prediction": row.label,
                "probabilities": row.probabilities,
                "route": row.route,
                "router_probability": row.router_probability,
                "versions": {
                    "cascade": versions["cascade"],
                    "router": versions["router"],
                    row.route: versions[row.route],
                },
                "features": online,
                "defaults_used": bool(missing[i]) or store_down,
                "skew_flags": [{"kind": f.kind, "field": f.field, "detail": f.detail} for f in flags[i]],
            }
        )
    return Outcome(rows=result, raw_rows=merged, batch=batch, flags=flags)


def _entity_keys(cascade: LoadedCascade, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    key = cascade.manifest.entity_key
    if key is None:
        return []
    online = set(cascade.manifest.feature_refs)
    keys = []
    for i, row in enumerate(rows):
        sent = sorted(online & set(row))
        if sent:
            raise InputError(
                f"Row {i}: {sent[0]!r} is an online feature, fetched by {key!r}; do not send it.",
                field=sent[0],
            )
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"Row {i}: {key!r} must be an integer entity key, got {value!r}.", field=key)
        if not ENTITY_KEY_MIN <= value <= ENTITY_KEY_MAX:
            raise InputError(f"Row {i}: {key!r} must be a 64-bit signed integer, got {value}.", field=key)
        keys.append(value)
    return keys


async def _fetch(
    features: FeatureSource, keys: list[int], options: PredictOptions
) -> tuple[list[dict[str, float | None] | None], bool]:
    if not keys:
        return [], False
    try:
        return await features.get(keys), False
    except FeatureStoreUnavailable:
        if not options.degrade_on_feature_store_error:
            raise
        return [None] * len(keys), True


def _flag_unknown_entities(
    cascade: LoadedCascade,
    keys: Sequence[int],
    values: Sequence[dict[str, float | None] | None],
    flags: list[list[SkewFlag]],
) -> None:
    """First among a row's flags: its entity key has no row in the online store (a 422 if rejected)."""
    key = cascade.manifest.entity_key or ""
    for i, fetched in enumerate(values):
        if fetched is None:
            detail = f"{key} {keys[i]} is not in the online store; the training defaults were used."
            flags[i].insert(0, SkewFlag("unknown_entity", key, detail))


def _merge(
    cascade: LoadedCascade, rows: list[dict[str, Any]], values: list[dict[str, float | None] | None]
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    defaults = {f.name: f.default for f in cascade.spec.online_features}
    merged, missing = [], []
    for i, row in enumerate(rows):
        fetched = values[i] if i < len(values) else None
        absent = [n for n in defaults if fetched is None or _is_missing(fetched.get(n))]
        filled = (
            {n: defaults[n] if n in absent else fetched[n] for n in defaults} if fetched else dict(defaults)
        )
        merged.append({**row, **filled})
        missing.append(absent)
    return merged, missing


def _is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
