"""Training-side feature store work: apply the definitions, materialize, point-in-time joins.

The store connection (:class:`FeastConfig`, :func:`open_store`, :func:`translate_feast_errors`)
lives in :mod:`skewguard.bentos.feature_store`, which the gateway shares; its names are re-exported
here for the pipeline's callers. Callers see :class:`FeastConfig`, plain data frames and
:class:`Materialization`; what Feast raises becomes a :class:`~skewguard.errors.ConfigError`
that says what to run, and a bad entity frame is an :class:`~skewguard.errors.InputError`.

Two facts about Feast 0.67 this module works around (both checked in its tests):

- The file offline store *drops* an entity row whose entity has snapshots but none
  within the TTL, and collapses rows with the same key and timestamp. We send each
  (customer, time) once and join the answers back, so every input row comes back, in
  input order, with NaN where Feast has no value.
- Online reads ignore the TTL, so :func:`materialize_features` writes only snapshots
  within the TTL before ``end``: a fresh online store answers what a training join as
  of ``end`` would. A value written earlier stays, though, until a newer one replaces it.
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from skewguard.bentos.feature_store import (
    ENTITY_KEY,
    FEATURE_NAMES,
    FEATURE_REFS,
    FEATURE_REPO,
    FEATURE_SERVICE,
    FEATURE_VIEW,
    ONLINE_STORES,
    FeastConfig,
    open_store,
    translate_feast_errors,
)
from skewguard.errors import ConfigError, InputError

__all__ = [
    "ENTITY_KEY",
    "FEATURE_NAMES",
    "FEATURE_REFS",
    "FEATURE_REPO",
    "FEATURE_SERVICE",
    "FEATURE_VIEW",
    "ONLINE_STORES",
    "FeastConfig",
    "Materialization",
    "apply_features",
    "historical_features",
    "latest_event_time",
    "materialize_features",
    "open_store",
    "teardown_features",
    "translate_feast_errors",
]

_EVENT_TS = "event_timestamp"
_TS_DTYPE = "datetime64[ns, UTC]"


@dataclass(frozen=True, slots=True)
class Materialization:
    """What :func:`materialize_features` wrote: the latest snapshot in [start, end] per customer."""

    feature_view: str
    start: datetime
    end: datetime
    online_store: str


def apply_features(config: FeastConfig) -> list[str]:
    """Register the definitions of ``feature_repo/definitions.py``; return the object names."""
    objects = _load_definitions(config)
    with translate_feast_errors("apply the definitions", config, "Check feature_repo/definitions.py."):
        open_store(config).apply(objects)
    return [f"{type(obj).__name__} {obj.name}" for obj in objects]


def _load_definitions(config: FeastConfig) -> list[Any]:
    """Run definitions.py by path (not a package; no bytecode left there); build its objects."""
    path = config.repo_dir / "definitions.py"
    if not path.is_file():
        raise ConfigError(f"Feast definitions {path} are missing; expected the project's feature_repo/.")
    namespace = runpy.run_path(str(path), run_name="skewguard_feature_definitions")
    objects: list[Any] = namespace["build_definitions"](config.data_dir)
    return objects


def latest_event_time(config: FeastConfig) -> datetime:
    """Just after the newest snapshot in the source data: 'now' for the demo's history."""
    path = config.data_dir / "customer_stats.parquet"
    try:
        stamps = pd.read_parquet(path, columns=[_EVENT_TS])[_EVENT_TS]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read {path}: run `skewguard demo-data` first.") from exc
    latest: datetime = stamps.max().to_pydatetime()
    return latest + timedelta(seconds=1)


def materialize_features(
    config: FeastConfig, *, end: datetime, start: datetime | None = None
) -> Materialization:
    """Write each customer's latest snapshot in [start, end] to the online store.

    ``start`` defaults to ``end`` minus the view's TTL, so a customer without a fresh
    snapshot is not written; naive datetimes are UTC. Values written before stay.
    """
    end = _as_utc(end)
    hint = "Run `skewguard features apply` first (and `skewguard demo-data` if the data is missing)."
    with translate_feast_errors("materialize", config, hint):
        store = open_store(config)
        ttl = store.get_feature_view(FEATURE_VIEW).ttl
        begin = (
            _as_utc(start) if start is not None else end - ttl if ttl else datetime(1970, 1, 1, tzinfo=UTC)
        )
        store.materialize(start_date=begin, end_date=end, feature_views=[FEATURE_VIEW])
    return Materialization(FEATURE_VIEW, begin, end, config.online_store)


def teardown_features(config: FeastConfig) -> None:
    """Delete the project's online values and its registry (the source data stays)."""
    with translate_feast_errors("tear down the feature store", config, "Is the online store reachable?"):
        open_store(config).teardown()  # type: ignore[no-untyped-call]  # Feast leaves it unannotated


def historical_features(
    config: FeastConfig, entity_df: pd.DataFrame, *, timestamp_column: str = "order_ts"
) -> pd.DataFrame:
    """``entity_df`` with the features as of each row's time (point in time), in input order.

    Every row gets the customer's latest snapshot at or before its timestamp and not older
    than the TTL, else NaN. Features come back as float64 columns named plainly
    (``orders_30d``, ...); naive timestamps are UTC.
    """
    keys = _entity_keys(entity_df, timestamp_column)
    unique = keys.dropna().drop_duplicates(ignore_index=True)
    if unique.empty:
        joined = pd.DataFrame({ENTITY_KEY: [], _EVENT_TS: [], **{name: [] for name in FEATURE_NAMES}})
    else:
        hint = "Run `skewguard features apply` first (and `skewguard demo-data` if the data is missing)."
        with translate_feast_errors("build the point-in-time join", config, hint):
            job = open_store(config).get_historical_features(entity_df=unique, features=list(FEATURE_REFS))
            joined = job.to_df()[[ENTITY_KEY, _EVENT_TS, *FEATURE_NAMES]]
    joined = joined.astype({ENTITY_KEY: "int64", _EVENT_TS: _TS_DTYPE})
    merged = keys.merge(joined, on=[ENTITY_KEY, _EVENT_TS], how="left", validate="many_to_one")
    out = entity_df.copy()
    for name in FEATURE_NAMES:
        out[name] = merged[name].to_numpy(dtype="float64")
    return out


def _entity_keys(entity_df: pd.DataFrame, timestamp_column: str) -> pd.DataFrame:
    """(customer_id int64, event_timestamp UTC) per input row, checked; NaT stays NaT."""
    missing = [column for column in (ENTITY_KEY, timestamp_column) if column not in entity_df.columns]
    if missing:
        raise InputError(
            f"The entity frame lacks the columns {', '.join(missing)}; expected {ENTITY_KEY} and "
            f"{timestamp_column} (the time each row's features are wanted for).",
            field=missing[0],
        )
    taken = [name for name in FEATURE_NAMES if name in entity_df.columns]
    if taken:
        raise InputError(
            f"The entity frame already has the feature columns {', '.join(taken)}; drop them first "
            "so the point-in-time values are not mixed with others.",
            field=taken[0],
        )
    try:
        ids = entity_df[ENTITY_KEY].astype("int64").reset_index(drop=True)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"The entity frame's {ENTITY_KEY} must hold whole numbers without gaps ({exc}).", field=ENTITY_KEY
        ) from exc
    try:
        times = pd.to_datetime(entity_df[timestamp_column], utc=True).astype(_TS_DTYPE).reset_index(drop=True)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"The entity frame's {timestamp_column} must hold timestamps ({exc}).", field=timestamp_column
        ) from exc
    return pd.DataFrame({ENTITY_KEY: ids, _EVENT_TS: times})


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
