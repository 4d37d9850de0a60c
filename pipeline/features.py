"""The feature store: Feast behind a few functions, for training sets and the online reader.

Feast types stay in here (and in ``pipeline.online``); callers see :class:`FeastConfig`,
plain data frames and :class:`Materialization`. What Feast and its stores raise is
translated once, in :func:`translate_feast_errors`, into a
:class:`~skewguard.errors.ConfigError` that says what to run; a bad entity frame is an
:class:`~skewguard.errors.InputError`.

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

import re
import runpy
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore, RepoConfig
from feast.errors import FeastError
from redis.exceptions import RedisError

from skewguard.errors import ConfigError, InputError
from skewguard.settings import Settings

FEATURE_REPO = Path(__file__).resolve().parent.parent / "feature_repo"
FEATURE_VIEW = "customer_stats"
FEATURE_SERVICE = "returns_cascade"
ENTITY_KEY = "customer_id"
FEATURE_NAMES = ("orders_30d", "return_rate_90d", "account_age_days")
FEATURE_REFS = tuple(f"{FEATURE_VIEW}:{name}" for name in FEATURE_NAMES)
ONLINE_STORES = ("sqlite", "redis")

_EVENT_TS = "event_timestamp"
_TS_DTYPE = "datetime64[ns, UTC]"
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
# redis-py 7 retries a refused connection 3 times with backoff: 5-10 s per call measured.
# Fail at once instead (the reader's callers fall back); a connection string may override.
_REDIS_FAIL_FAST = {"retry": "null", "socket_connect_timeout": "1"}
# What Feast, its file store (pyarrow, dask) and its online stores raise on bad state.
_FEAST_FAILURES = (FeastError, OSError, ValueError, sqlite3.Error, RedisError)


@dataclass(frozen=True, slots=True)
class FeastConfig:
    """Where Feast keeps its state and reads its data, and which online store serves reads."""

    state_dir: Path  # registry.db, and online.db for SQLite; never inside the source tree
    data_dir: Path  # customer_stats.parquet
    project: str = "skewguard"  # also the Redis key suffix: one project per deployment or test run
    online_store: str = "sqlite"  # "sqlite" | "redis"
    redis_url: str = "127.0.0.1:6379"  # Feast's form: host:port[,db=N][,password=...]
    repo_dir: Path = FEATURE_REPO  # holds definitions.py

    def __post_init__(self) -> None:
        if self.online_store not in ONLINE_STORES:
            raise ConfigError(
                f"Online store {self.online_store!r} is not supported; "
                f"expected one of {', '.join(ONLINE_STORES)}.",
                field="SKEWGUARD_ONLINE_STORE",
            )
        if not _PROJECT_NAME.match(self.project):
            raise ConfigError(
                f"Feast project name {self.project!r} is invalid; use letters, digits and underscores.",
                field="SKEWGUARD_FEAST_PROJECT",
            )
        if "://" in self.redis_url:
            raise ConfigError(
                f"Redis connection {self.redis_url!r} is a URL; "
                "Feast expects host:port[,db=N][,password=...].",
                field="SKEWGUARD_REDIS_URL",
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> FeastConfig:
        """State in ``<home>/feast``, data in ``<home>/data``; the store as the settings say."""
        return cls(
            state_dir=settings.home / "feast",
            data_dir=settings.data_dir,
            project=settings.feast_project,
            online_store=settings.online_store,
            redis_url=settings.redis_url,
        )

    def describe(self) -> str:
        """The online store in words, for messages: ``sqlite at …`` or ``redis at host:port``."""
        if self.online_store == "redis":
            return f"redis at {self.redis_url.split(',')[0]}"
        return f"sqlite at {self.state_dir / 'online.db'}"


@dataclass(frozen=True, slots=True)
class Materialization:
    """What :func:`materialize_features` wrote: the latest snapshot in [start, end] per customer."""

    feature_view: str
    start: datetime
    end: datetime
    online_store: str


@contextmanager
def translate_feast_errors(action: str, config: FeastConfig, hint: str) -> Iterator[None]:
    """Turn what Feast and its stores raise into a ConfigError that says what to do."""
    try:
        yield
    except _FEAST_FAILURES as exc:
        raise ConfigError(
            f"Feast could not {action} (project {config.project!r}, online store {config.describe()}): "
            f"{type(exc).__name__}: {exc}. {hint}"
        ) from exc


def open_store(config: FeastConfig) -> FeatureStore:
    """A FeatureStore for ``config``: file offline store, SQLite or Redis online store."""
    state = config.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    online: dict[str, Any] = (
        {"type": "redis", "connection_string": _fail_fast(config.redis_url)}
        if config.online_store == "redis"
        else {"type": "sqlite", "path": str(state / "online.db")}
    )
    repo_config = RepoConfig(
        project=config.project,
        provider="local",
        registry=str(state / "registry.db"),
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=state,  # Feast resolves relative paths against it: keep them out of the source tree
    )
    return FeatureStore(repo_path=str(state), config=repo_config)


def _fail_fast(connection: str) -> str:
    """Feast's Redis connection string plus the fail-fast options it does not set itself."""
    given = {part.split("=", 1)[0].strip() for part in connection.split(",") if "=" in part}
    return ",".join([connection, *(f"{k}={v}" for k, v in _REDIS_FAIL_FAST.items() if k not in given)])


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
