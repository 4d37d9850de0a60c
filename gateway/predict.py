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
from skewguard.bentos.inputs import Batch, epoch_seconds
from skewguard.bentos.routing import RowResult
from skewguard.errors import FeatureStoreUnavailable, InputError
from skewguard.featurestore.online import EntityId, OnlineRow
from skewguard.gateway.batching import Known
from skewguard.gateway.cascades import LoadedCascade
from skewguard.gateway.decoding import encode_request
from skewguard.gateway.features import FeatureSource
from skewguard.gateway.guard import SkewFlag

DEFAULT_MAX_ROWS = 1_000
MAX_STRING_KEY = 256
ENTITY_KEY_MIN, ENTITY_KEY_MAX = -(2**63), 2**63 - 1
"""Feast keys are int64: a larger key failed the whole batched read, a 500 for every request in it."""


@dataclass(frozen=True, slots=True)
class PredictOptions:
    """Per-gateway choices that shape every request."""

    max_rows: int = DEFAULT_MAX_ROWS
    degrade_on_feature_store_error: bool = True
    budget_seconds: float = 1.0
    max_request_pixels: int = MAX_REQUEST_PIXELS


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one request read from the online store: its entity keys, their rows, whether it was down."""

    keys: list[EntityId]
    values: list[OnlineRow | None]
    store_down: bool = False


@dataclass(slots=True)
class Outcome:
    """The answer rows, plus what the log and the metrics need."""

    rows: list[dict[str, Any]]
    raw_rows: list[dict[str, Any]]
    """The request's rows as the client sent them (no online features: those are in ``rows``)."""
    batch: Batch
    flags: list[list[SkewFlag]] = field(default_factory=list)
    fetched: Fetched | None = None
    """The online features it read (a shadow reading the same features reuses them)."""


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
    cascade: LoadedCascade, body: Any, options: PredictOptions, *, fetched: Fetched | None = None
) -> Outcome:
    """Run the cascade over the request's rows.

    ``fetched``: the online features another cascade reading the same ones (same project,
    entity key and references) already read for this body; used when its keys match.
    """
    deadline = time.monotonic() + options.budget_seconds
    key = cascade.manifest.entity_key
    sent = cascade.request_fields if key is None else (*cascade.request_fields, key)
    rows = parse_rows(body, options.max_rows, accepted=sent, fetched=cascade.manifest.feature_refs)
    keys = _entity_keys(cascade, rows)
    if fetched is None or fetched.keys != keys:
        fetched = Fetched(keys, *await _fetch(cascade.features, keys, options))
    values, store_down = fetched.values, fetched.store_down
    merged, missing, stale = _merge(cascade, rows, values)
    encoded = await encode_request(
        cascade.spec,
        merged,
        allowed_extra=(key or "",),
        max_pixels=options.max_request_pixels,
        deadline=deadline,
    )
    ran = await cascade.runner.run(encoded, merged, deadline, _known(cascade, keys, fetched, missing, stale))
    flags = ran.flags
    answers = [
        _answer(cascade, row, merged[i], bool(missing[i] or stale[i]) or store_down, flags[i])
        for i, row in enumerate(ran.results)
    ]
    return Outcome(rows=answers, raw_rows=rows, batch=ran.batch, flags=flags, fetched=fetched)


_STORE_DOWN = (SkewFlag("feature_store_unavailable", "*", "online features defaulted"),)


def _known(
    cascade: LoadedCascade,
    keys: Sequence[EntityId],
    fetched: Fetched,
    missing: list[list[str]],
    stale: list[list[SkewFlag]],
) -> Known:
    """The request's own flags around the guard's: an entity the online store lacks first; the
    store down, or features past their TTL, last."""
    if fetched.store_down:
        return Known(missing, (), [[*_STORE_DOWN, *row] for row in stale])
    before = _unknown_entities(cascade, keys, fetched.values)
    return Known(missing, before, stale if any(stale) else ())


def _answer(
    cascade: LoadedCascade,
    row: RowResult,
    merged: Mapping[str, Any],
    defaulted: bool,
    flags: Sequence[SkewFlag],
) -> dict[str, Any]:
    """One row's answer: prediction (a classifier's probabilities too), route, versions, features, flags."""
    versions = cascade.versions
    answer: dict[str, Any] = {"prediction": row.prediction}
    if row.probabilities is not None:
        answer["probabilities"] = row.probabilities
    answer["route"] = row.route
    answer["router_probability"] = row.router_probability
    answer["versions"] = {
        "cascade": versions["cascade"],
        **({"router": versions["router"]} if "router" in versions else {}),
        row.route: versions[row.route],
    }
    answer["features"] = {name: merged[name] for name in cascade.manifest.feature_refs}
    answer["defaults_used"] = defaulted
    answer["skew_flags"] = [{"kind": f.kind, "field": f.field, "detail": f.detail} for f in flags]
    return answer


def _entity_keys(cascade: LoadedCascade, rows: Sequence[Mapping[str, Any]]) -> list[EntityId]:
    key = cascade.manifest.entity_key
    if key is None:
        return []
    online = set(cascade.manifest.feature_refs)
    strings = cascade.manifest.entity_key_type == "string"
    keys: list[EntityId] = []
    for i, row in enumerate(rows):
        sent = sorted(online & set(row))
        if sent:
            raise InputError(
                f"Row {i}: {sent[0]!r} is an online feature, fetched by {key!r}; do not send it.",
                field=sent[0],
            )
        keys.append(_string_key(i, key, row.get(key)) if strings else _integer_key(i, key, row.get(key)))
    return keys


def _integer_key(i: int, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"Row {i}: {key!r} must be an integer entity key, got {_short(value)}.", field=key)
    if not ENTITY_KEY_MIN <= value <= ENTITY_KEY_MAX:
        raise InputError(f"Row {i}: {key!r} must be a 64-bit signed integer, got {_short(value)}.", field=key)
    return value


def _string_key(i: int, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_STRING_KEY:
        raise InputError(
            f"Row {i}: {key!r} must be a string entity key of 1 to {MAX_STRING_KEY} characters, "
            f"got {_short(value)}.",
            field=key,
        )
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def _fetch(
    features: FeatureSource | None, keys: list[EntityId], options: PredictOptions
) -> tuple[list[OnlineRow | None], bool]:
    if not keys or features is None:
        return [], False
    try:
        return await features.get(keys), False
    except FeatureStoreUnavailable:
        if not options.degrade_on_feature_store_error:
            raise
        return [None] * len(keys), True


def _unknown_entities(
    cascade: LoadedCascade, keys: Sequence[EntityId], values: Sequence[OnlineRow | None]
) -> list[list[SkewFlag]] | tuple[()]:
    """Per row, a flag if its entity key has no row in the online store (422 if rejected); () if all have."""
    if all(fetched is not None for fetched in values):
        return ()
    key = cascade.manifest.entity_key or ""
    detail = "{} {} is not in the online store; the training defaults were used."
    return [
        [] if fetched is not None else [SkewFlag("unknown_entity", key, detail.format(key, keys[i]))]
        for i, fetched in enumerate(values)
    ]


def _merge(
    cascade: LoadedCascade, rows: list[dict[str, Any]], values: list[OnlineRow | None]
) -> tuple[list[dict[str, Any]], list[list[str]], list[list[SkewFlag]]]:
    """Each row with its online features; per row, the features defaulted and the stale ones flagged.

    A value older than its view's TTL at the row's event time (or now) is treated as the
    training join treats it — missing, so the training default — and flagged ``stale_feature``.
    """
    defaults = {f.name: f.default for f in cascade.spec.online_features}
    merged, missing, stale = [], [], []
    for i, row in enumerate(rows):
        fetched = values[i] if i < len(values) else None
        old = _stale(cascade, row, fetched) if fetched is not None else {}
        absent = [n for n in defaults if fetched is None or n in old or _is_missing(fetched.values.get(n))]
        filled = (
            {n: defaults[n] if n in absent else fetched.values[n] for n in defaults}
            if fetched
            else dict(defaults)
        )
        merged.append({**row, **filled})
        missing.append([n for n in absent if n not in old])  # a stale one is flagged as stale, not missing
        stale.append(
            [
                SkewFlag(
                    "stale_feature",
                    n,
                    f"{n} is {_age(age)} old, past its view's TTL; the training default was used",
                )
                for n, age in old.items()
            ]
        )
    return merged, missing, stale


def _stale(cascade: LoadedCascade, row: Mapping[str, Any], fetched: OnlineRow) -> dict[str, float]:
    """The features whose value is older than their TTL at the row's event time: name → age in seconds."""
    ttl = cascade.manifest.feature_ttl_seconds
    if not ttl or not fetched.event_times:
        return {}
    field = cascade.manifest.event_time_field
    now = time.time()
    if field is not None and row.get(field) is not None:
        now = epoch_seconds(cascade.spec.get(field), row[field])
    return {
        name: now - stamp
        for name, stamp in fetched.event_times.items()
        if name in ttl and now - stamp > ttl[name]
    }


def _age(seconds: float) -> str:
    return f"{seconds / 86_400:.1f} days" if seconds >= 86_400 else f"{seconds / 3_600:.1f} hours"


def _is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
