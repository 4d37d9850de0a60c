"""The feature store connection: where Feast lives, how to open it, and what its failures mean.

Feast types stay in here (and in ``skewguard.pipeline.features``, which applies, materializes and
joins with the store :func:`open_store` returns); the gateway sees :class:`FeastConfig`
and :class:`OnlineFeatureReader`, which answers plain dicts. What Feast and its stores
raise is translated once: :func:`translate_feast_errors` turns it into a
:class:`~skewguard.errors.ConfigError` that says what to run; :func:`translate_online_errors`
does the same for the online read, except that an unreachable or failing online store is
a :class:`~skewguard.errors.FeatureStoreUnavailable` (the gateway may degrade on it).

Feast does not apply the view's TTL to online reads; freshness is decided when
materializing (see ``skewguard.pipeline.features.materialize_features``).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skewguard.errors import ConfigError, FeatureStoreUnavailable
from skewguard.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

FEATURE_REPO = Path(__file__).resolve().parent.parent / "feature_repo"
FEATURE_VIEW = "customer_stats"
FEATURE_SERVICE = "returns_cascade"
ENTITY_KEY = "customer_id"
FEATURE_NAMES = ("orders_30d", "return_rate_90d", "account_age_days")
FEATURE_REFS = tuple(f"{FEATURE_VIEW}:{name}" for name in FEATURE_NAMES)
ONLINE_STORES = ("sqlite", "redis")

_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
# redis-py 7 retries a refused connection 3 times with backoff: 5-10 s per call measured.
# Fail at once instead (the reader's callers fall back), and bound a read from a Redis that
# stopped answering, which would otherwise block its thread forever; a connection string
# may override either.
_REDIS_FAIL_FAST = {"retry": "null", "socket_connect_timeout": "1", "socket_timeout": "5"}
_ONLINE_HINT = (
    "Check that the online store is reachable (SKEWGUARD_ONLINE_STORE, SKEWGUARD_REDIS_URL) "
    "and that `skewguard features apply` and `skewguard features materialize` ran."
)


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


def _feast_failures() -> tuple[type[Exception], ...]:
    """What Feast, its file store (pyarrow, dask) and its online stores raise on bad state.

    Feast is imported when a store is opened or fails, never with this module: it takes
    seconds, and ``FeastConfig`` alone is wanted by settings and tests.
    """
    from feast.errors import FeastError
    from redis.exceptions import RedisError

    return (FeastError, OSError, ValueError, sqlite3.Error, RedisError)


def _store_outages() -> tuple[type[Exception], ...]:
    """Of those, what an online store raises when it is down or failing, not misconfigured."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, sqlite3.OperationalError)


@contextmanager
def translate_feast_errors(action: str, config: FeastConfig, hint: str) -> Iterator[None]:
    """Turn what Feast and its stores raise into a ConfigError that says what to do."""
    try:
        yield
    except _feast_failures() as exc:  # evaluated only when something is raised
        raise ConfigError(_failure(action, config, exc, hint)) from exc


@contextmanager
def translate_online_errors(action: str, config: FeastConfig, hint: str) -> Iterator[None]:
    """Like :func:`translate_feast_errors`, but a store that is down is FeatureStoreUnavailable."""
    try:
        yield
    except _store_outages() as exc:
        raise FeatureStoreUnavailable(_failure(action, config, exc, hint)) from exc
    except _feast_failures() as exc:
        raise ConfigError(_failure(action, config, exc, hint)) from exc


def _failure(action: str, config: FeastConfig, exc: BaseException, hint: str) -> str:
    return (
        f"Feast could not {action} (project {config.project!r}, online store {config.describe()}): "
        f"{type(exc).__name__}: {exc}. {hint}"
    )


def open_store(config: FeastConfig) -> FeatureStore:
    """A FeatureStore for ``config``: file offline store, SQLite or Redis online store."""
    from feast import FeatureStore, RepoConfig

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
        # The type's name, not {"type": "file"}: Feast validates a dict at once and imports its
        # offline store (dask, scipy: ~26 MB the serving gateway never uses); a name is
        # resolved to the same config when the offline store is first used.
        offline_store="file",
        entity_key_serialization_version=3,
        repo_path=state,  # Feast resolves relative paths against it: keep them out of the source tree
    )
    return FeatureStore(repo_path=str(state), config=repo_config)


def _fail_fast(connection: str) -> str:
    """Feast's Redis connection string plus the fail-fast options it does not set itself."""
    given = {part.split("=", 1)[0].strip() for part in connection.split(",") if "=" in part}
    return ",".join([connection, *(f"{k}={v}" for k, v in _REDIS_FAIL_FAST.items() if k not in given)])


class OnlineFeatureReader:
    """Blocking reads of each customer's latest materialized ``customer_stats``: one store read per call.

    It asks Feast's provider for the rows (``Provider.online_read``, the call every online
    store implements), not ``FeatureStore.get_online_features``: that one rebuilds its
    request context, response protos and a column dict on every call, ~260 µs for one id
    against ~30 µs here (16 ids: ~680 against ~280 µs, measured on this project's store).
    The feature view comes from the registry when the store opens and again every
    ``view_refresh_seconds`` (reading it costs ~110 µs), so a re-applied view is picked up.
    Not thread-safe (SQLite's online store shares one connection): use it from one thread.
    """

    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __init__(self, config: FeastConfig, *, view_refresh_seconds: float = 60.0) -> None:
        self.config = config
        self.view_refresh_seconds = view_refresh_seconds
        self._store: FeatureStore | None = None
        self._view: FeatureView | None = None
        self._view_read_at = 0.0

    def read(self, entity_ids: Sequence[int]) -> list[dict[str, float | None] | None]:
        """The features of each customer id, in the order asked; None for a customer never written.

        A customer is known when its row has an event time: for an unknown key SQLite's store
        answers none and Redis's the epoch (time 0), both without values.
        """
        if not entity_ids:
            return []
        with translate_online_errors("read online features", self.config, _ONLINE_HINT):
            store, view = self._open()
            keys = _entity_keys(entity_ids)
            found = store.provider.online_read(store.config, view, keys, list(FEATURE_NAMES))
        return [
            {n: _number(values.get(n)) for n in FEATURE_NAMES}
            if stamp is not None and stamp.timestamp() and values is not None
            else None
            for stamp, values in found
        ]

    def _open(self) -> tuple[FeatureStore, FeatureView]:
        now = time.monotonic()
        if self._store is None:
            self._store = open_store(self.config)
        if self._view is None or now - self._view_read_at > self.view_refresh_seconds:
            self._view = self._store.get_feature_view(FEATURE_VIEW)
            self._view_read_at = now
        return self._store, self._view

    def import_store_modules(self) -> None:
        """Import what opening the store imports, and keep nothing open.

        Feast's ``FeatureStore`` imports ~700 modules when it is constructed (its registry,
        providers, FastAPI...: ~57 MB of RSS here), and its online store connects only on the
        first read. A pre-fork master calls this so that its workers share those pages instead
        of each importing them again (``skewguard.gateway.workers``).
        """
        open_store(self.config).provider.online_store  # noqa: B018 - the property imports the store's class

    def close(self) -> None:
        """Let go of the store (its connections close with it); the next read opens it again."""
        self._store = None
        self._view = None


def _entity_keys(entity_ids: Sequence[int]) -> list[EntityKey]:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(int64_val=int(i))]) for i in entity_ids]


def _number(value: Value | None) -> float | None:
    """A stored value as a float; None when the feature was never written or written as null."""
    kind = None if value is None else value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    return float(getattr(value, kind))
