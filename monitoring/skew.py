"""Online–offline feature skew: the feature values the gateway served against Feast's point-in-time ones.

The Feature Store pattern promises that serving reads what training would have read for
the same entity at the same moment. This checks the promise on logged traffic:

    records ─► served frame (entity key, event_timestamp, the served value of each feature)
                    │ keys
                    └─► offline features (Feast historical retrieval, as of each row's time)
    served + offline ─► compare_features ─► SkewSummary (per feature: rows, mismatches, distance)

A row's feature is a *mismatch* when both sides have a value and they differ beyond
``atol + rtol·|offline|``, or when one side has a value and the other has none — counted
apart as ``missing_online`` (the gateway fell back to the spec's default, or the store was
down) and ``missing_offline`` (no snapshot within the view's TTL at that time). Both sides
missing agree. The distance is the mean and the largest absolute difference over the rows
where both sides have a value, and the mean divided by the feature's training standard
deviation, so one threshold can read across features of different units.

Why it finds something: Feast's online reads ignore the view's TTL, so an entity that went
quiet keeps the last value materialized for it while a training join at the same moment
says "no value" (``missing_offline``); and a snapshot that arrives in the offline store
after the last materialization is served only after the next one (a value mismatch).

``compare_features`` is pure (two frames in, a summary out); :class:`FeastOfflineFeatures`
is the thin wrapper around Feast's ``get_historical_features``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from skewguard.bentos.manifest import CascadeManifest
from skewguard.errors import ConfigError
from skewguard.featurestore.connection import FeastConfig, open_store, translate_feast_errors

EVENT_TS = "event_timestamp"
_TS_DTYPE = "datetime64[ns, UTC]"
MAX_EXAMPLES = 10
_DEFAULTED = frozenset({"missing_online_feature", "stale_feature", "feature_store_unavailable"})


@dataclasses.dataclass(frozen=True, slots=True)
class SkewPolicy:
    """When two values differ, and what share of differing rows makes a feature skewed."""

    max_mismatch_rate: float = 0.01
    atol: float = 1e-6
    rtol: float = 1e-6

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_mismatch_rate <= 1.0:
            raise ConfigError(
                f"SkewPolicy.max_mismatch_rate is {self.max_mismatch_rate}; expected a share in [0, 1].",
                field="max_mismatch_rate",
            )
        if not (self.atol >= 0.0 and self.rtol >= 0.0):
            raise ConfigError(
                f"SkewPolicy tolerances must be >= 0; got atol={self.atol}, rtol={self.rtol}.", field="atol"
            )


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureSkew:
    """One feature over the compared rows."""

    feature: str
    rows: int
    differ: int
    missing_online: int
    missing_offline: int
    both_present: int
    mean_abs_diff: float | None
    max_abs_diff: float | None
    scale: float | None
    """The feature's training standard deviation (None when unknown or zero)."""
    skewed: bool
    examples: tuple[int, ...] = ()
    """Up to ``MAX_EXAMPLES`` entity keys with a mismatch, smallest first."""

    @property
    def mismatches(self) -> int:
        return self.differ + self.missing_online + self.missing_offline

    @property
    def mismatch_rate(self) -> float | None:
        return self.mismatches / self.rows if self.rows else None

    @property
    def normalized_mean_abs_diff(self) -> float | None:
        if self.mean_abs_diff is None or self.scale is None:
            return None
        return self.mean_abs_diff / self.scale

    def to_dict(self) -> dict[str, Any]:
        found = {field.name: _finite(getattr(self, field.name)) for field in dataclasses.fields(self)}
        del found["feature"]
        found["examples"] = list(self.examples)
        found |= {"mismatches": self.mismatches, "mismatch_rate": self.mismatch_rate}
        return found | {"normalized_mean_abs_diff": _finite(self.normalized_mean_abs_diff)}


@dataclasses.dataclass(frozen=True, slots=True)
class SkewSummary:
    """Served against offline values for every online feature of one cascade."""

    features: tuple[FeatureSkew, ...]
    policy: SkewPolicy
    notes: tuple[str, ...] = ()
    """Rows left out, and why (no entity key, no readable time)."""

    @property
    def skewed_features(self) -> tuple[str, ...]:
        return tuple(f.feature for f in self.features if f.skewed)

    def feature(self, name: str) -> FeatureSkew:
        for found in self.features:
            if found.feature == name:
                return found
        raise KeyError(name)

    def reasons(self) -> tuple[str, ...]:
        """One sentence per skewed feature, each named as feature skew (not drift)."""
        return tuple(
            f"feature skew: {f.feature} served online differs from the offline store in "
            f"{f.mismatch_rate or 0.0:.1%} of {f.rows} rows ({f.differ} differ, {f.missing_online} missing "
            f"online, {f.missing_offline} missing offline; threshold {self.policy.max_mismatch_rate:.1%})"
            for f in self.features
            if f.skewed
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_mismatch_rate": self.policy.max_mismatch_rate,
            "atol": self.policy.atol,
            "rtol": self.policy.rtol,
            "skewed": list(self.skewed_features),
            "features": {f.feature: f.to_dict() for f in self.features},
            "notes": list(self.notes),
        }


class OfflineFeatures(Protocol):
    """Point-in-time offline values: the role :class:`FeastOfflineFeatures` plays."""

    def __call__(self, keys: pd.DataFrame, refs: Mapping[str, str]) -> pd.DataFrame:
        """``keys`` holds the entity key and ``event_timestamp`` (UTC); the answer has the same rows
        in the same order and one float column per name of ``refs`` (``{name: "view:feature"}``),
        NaN where the store has no value at that time."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class SkewCheck:
    """What the monitor job needs for a skew check: the offline values, the policy, the time field."""

    offline: OfflineFeatures
    policy: SkewPolicy = SkewPolicy()
    at: str | None = None
    """A request field holding the time to compare at; None: when the gateway served the row."""

    def run(
        self, records: Sequence[Mapping[str, Any]], manifest: CascadeManifest, training: pd.DataFrame
    ) -> SkewSummary:
        """:func:`check_skew` on ``records``, distances scaled by the spread in ``training``."""
        scales = training_scales(training, manifest.feature_refs)
        return check_skew(records, manifest, self.offline, policy=self.policy, scales=scales, at=self.at)


def served_frame(
    records: Sequence[Mapping[str, Any]],
    entity_key: str,
    features: Sequence[str],
    *,
    at: str | None = None,
    key_type: str = "int64",
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The entity key, the time and the served features of each record, plus notes on rows left out.

    The time is when the gateway served the row (``ts``), or the request field ``at``. A
    feature the gateway filled with the spec's default (a ``missing_online_feature`` flag, or
    the store was down) is NaN: the online store had no value for it.
    """
    keys: list[int | str] = []
    times: list[pd.Timestamp] = []
    values: dict[str, list[float]] = {name: [] for name in features}
    no_key = no_time = 0
    for record in records:
        fields = record.get("fields") or {}
        key, moment = fields.get(entity_key), _moment(record.get("ts") if at is None else fields.get(at))
        if not _is_key(key, key_type):
            no_key += 1
            continue
        if moment is None:
            no_time += 1
            continue
        keys.append(key)
        times.append(moment)
        online, defaulted = record.get("online_features") or {}, _defaulted(record, features)
        for name in features:
            values[name].append(math.nan if name in defaulted else _number(online.get(name)))
    frame = pd.DataFrame(
        {
            entity_key: pd.Series(keys, dtype=object if key_type == "string" else "int64"),
            EVENT_TS: pd.Series(times, dtype=_TS_DTYPE),
        }
    )
    for name in features:
        frame[name] = np.asarray(values[name], dtype=np.float64)
    kind = "a string" if key_type == "string" else "an integer"
    notes = [f"{n} rows without {kind} {entity_key} were left out" for n in (no_key,) if n]
    notes += [f"{n} rows without a readable {at or 'ts'} were left out" for n in (no_time,) if n]
    return frame, tuple(notes)


def compare_features(
    served: pd.DataFrame,
    offline: pd.DataFrame,
    features: Iterable[str],
    *,
    policy: SkewPolicy | None = None,
    scales: Mapping[str, float] | None = None,
    entity_key: str | None = None,
    notes: Sequence[str] = (),
) -> SkewSummary:
    """Compare ``served`` with ``offline`` row by row (same length, same order), per feature.

    With ``entity_key`` (a column of ``served``), each feature names a few mismatching entities.
    """
    policy = policy or SkewPolicy()
    if len(served) != len(offline):
        raise ConfigError(
            f"The served frame has {len(served)} rows and the offline one {len(offline)}; "
            "the offline values must answer every served row, in order."
        )
    keys = served[entity_key].to_numpy() if entity_key is not None and entity_key in served else None
    found = []
    for name in features:
        for side, frame in (("served", served), ("offline", offline)):
            if name not in frame.columns:
                raise ConfigError(f"The {side} frame has no column {name!r}.", field=name)
        a = served[name].to_numpy(dtype=np.float64)
        b = offline[name].to_numpy(dtype=np.float64)
        found.append(_compare(name, a, b, keys, policy, (scales or {}).get(name)))
    return SkewSummary(tuple(found), policy, tuple(notes))


def _compare(
    name: str,
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    keys: NDArray[Any] | None,
    policy: SkewPolicy,
    scale: float | None,
) -> FeatureSkew:
    has_a, has_b = ~np.isnan(a), ~np.isnan(b)
    both = has_a & has_b
    diff = np.abs(a - b, where=both, out=np.zeros_like(a))
    differs = both & (diff > policy.atol + policy.rtol * np.abs(np.nan_to_num(b)))
    mismatched = differs | (has_a != has_b)
    rows = len(a)
    examples = () if keys is None else tuple(sorted({k.item() for k in keys[mismatched]})[:MAX_EXAMPLES])
    return FeatureSkew(
        feature=name,
        rows=rows,
        differ=int(differs.sum()),
        missing_online=int((~has_a & has_b).sum()),
        missing_offline=int((has_a & ~has_b).sum()),
        both_present=int(both.sum()),
        mean_abs_diff=float(diff[both].mean()) if both.any() else None,
        max_abs_diff=float(diff[both].max()) if both.any() else None,
        scale=scale if scale is not None and math.isfinite(scale) and scale > 0 else None,
        skewed=rows > 0 and int(mismatched.sum()) / rows > policy.max_mismatch_rate,
        examples=examples,
    )


def check_skew(
    records: Sequence[Mapping[str, Any]],
    manifest: CascadeManifest,
    offline: OfflineFeatures,
    *,
    policy: SkewPolicy | None = None,
    scales: Mapping[str, float] | None = None,
    at: str | None = None,
) -> SkewSummary:
    """Served against point-in-time offline values for the online features ``manifest`` names."""
    if manifest.entity_key is None or not manifest.feature_refs:
        return SkewSummary(
            (), policy or SkewPolicy(), (f"cascade {manifest.name!r} reads no online features",)
        )
    names = list(manifest.feature_refs)
    served, notes = served_frame(
        records, manifest.entity_key, names, at=at, key_type=manifest.entity_key_type
    )
    found = offline(served[[manifest.entity_key, EVENT_TS]], manifest.feature_refs)
    return compare_features(
        served, found, names, policy=policy, scales=scales, entity_key=manifest.entity_key, notes=notes
    )


def training_scales(training: pd.DataFrame, features: Iterable[str]) -> dict[str, float]:
    """Each feature's standard deviation in the training rows (for the normalized distance)."""
    return {
        name: float(pd.to_numeric(training[name], errors="coerce").std())
        for name in features
        if name in training.columns
    }


class FeastOfflineFeatures:
    """Feast's point-in-time join over the file offline store, for :func:`check_skew`.

    Each (entity, time) pair is asked once and the answers are joined back: Feast's file
    store collapses repeated pairs and drops a row whose entity has no snapshot within the
    TTL (as ``skewguard.featurestore.repository.historical_features`` works around too).
    """

    def __init__(self, config: FeastConfig) -> None:
        self.config = config

    def __call__(self, keys: pd.DataFrame, refs: Mapping[str, str]) -> pd.DataFrame:
        key = next(c for c in keys.columns if c != EVENT_TS)
        key_dtype = "int64" if pd.api.types.is_integer_dtype(keys[key]) else object
        keys = keys.astype({key: key_dtype, EVENT_TS: _TS_DTYPE}).reset_index(drop=True)
        columns = {ref.split(":", 1)[-1]: name for name, ref in refs.items()}
        unique = keys.drop_duplicates(ignore_index=True)
        if unique.empty:
            return pd.DataFrame({name: np.full(len(keys), np.nan) for name in refs})
        hint = "Run `skewguard features apply -f <cascade file>` first, or pass --no-skew to skip the check."
        with translate_feast_errors("read point-in-time features for the skew check", self.config, hint):
            job = open_store(self.config).get_historical_features(
                entity_df=unique, features=list(refs.values())
            )
            joined = job.to_df()[[key, EVENT_TS, *columns]].rename(columns=columns)
        joined = joined.astype({key: key_dtype, EVENT_TS: _TS_DTYPE})
        merged = keys.merge(joined, on=[key, EVENT_TS], how="left", validate="many_to_one")
        return pd.DataFrame({name: merged[name].to_numpy(dtype=np.float64) for name in refs})


def _is_key(value: Any, key_type: str) -> TypeGuard[int | str]:
    if key_type == "string":
        return isinstance(value, str)
    return isinstance(value, int) and not isinstance(value, bool)


def _defaulted(record: Mapping[str, Any], features: Sequence[str]) -> frozenset[str]:
    """The features the gateway filled with defaults; all of them if it said so without naming any."""
    flags = [f for f in record.get("flags") or () if isinstance(f, Mapping) and f.get("kind") in _DEFAULTED]
    if any(f.get("kind") == "feature_store_unavailable" for f in flags):
        return frozenset(features)
    named = frozenset(str(f.get("field")) for f in flags)
    return named if named or not record.get("defaults_used") else frozenset(features)


def _moment(value: Any) -> pd.Timestamp | None:
    """A UTC time from epoch seconds or an ISO-8601 string; None when it is neither."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            moment = pd.Timestamp(float(value), unit="s", tz="UTC")
        elif isinstance(value, str):
            moment = pd.Timestamp(value)
            moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
        else:
            return None
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return None
    # Feast's file store keeps microseconds (it warns and drops the rest): ask at a time it can hold.
    return None if pd.isna(moment) else moment.floor("us")


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: a float that is not finite becomes None."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)
