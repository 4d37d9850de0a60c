"""Where a cascade's Feast project lives, how to open it, and what its failures mean.

Each cascade with online features has a Feast project of its own, named
``<SKEWGUARD_FEAST_PROJECT>_<cascade>``: its registry (and, with SQLite, its online store)
lives in ``<home>/feast/<project>/``, and with Redis its keys carry the project's name, so
two cascades — or two test runs — never overwrite each other's definitions. What Feast and
its stores raise is translated once: :func:`translate_feast_errors` turns it into a
:class:`~skewguard.errors.ConfigError` that says what to run; :func:`translate_online_errors`
does the same, except that an unreachable or failing online store is a
:class:`~skewguard.errors.FeatureStoreUnavailable` (the gateway may degrade on it).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skewguard.errors import ConfigError, FeatureStoreUnavailable
from skewguard.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

ONLINE_STORES = ("sqlite", "redis")
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
# redis-py 7 retries a refused connection 3 times with backoff: 5-10 s per call measured.
# Fail at once instead (the reader's callers fall back), and bound a read from a Redis that
# stopped answering, which would otherwise block its thread forever; a connection string
# may override either.
_REDIS_FAIL_FAST = {"retry": "null", "socket_connect_timeout": "1", "socket_timeout": "5"}


@dataclass(frozen=True, slots=True)
class FeastConfig:
    """One Feast project: where its state lives, which online store serves it, where its definitions are."""

    state_dir: Path  # registry.db, and online.db for SQLite; never inside the user's source tree
    project: str
    online_store: str = "sqlite"  # "sqlite" | "redis"
    redis_url: str = "127.0.0.1:6379"  # Feast's form: host:port[,db=N][,password=...]
    repo_dir: Path | None = None  # the user's Feast repository (definitions); serving needs none

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
    def for_project(cls, settings: Settings, project: str, repo_dir: Path | None = None) -> FeastConfig:
        """The project's state in ``<home>/feast/<project>``; the online store as the settings say."""
        return cls(
            state_dir=settings.home / "feast" / project,
            project=project,
            online_store=settings.online_store,
            redis_url=settings.redis_url,
            repo_dir=repo_dir,
        )

    def describe(self) -> str:
        """The online store in words, for messages: ``sqlite at …`` or ``redis at host:port``."""
        if self.online_store == "redis":
            return f"redis at {self.redis_url.split(',')[0]}"
        return f"sqlite at {self.state_dir / 'online.db'}"


def project_name(settings: Settings, cascade: str) -> str:
    """The Feast project of cascade ``cascade``: the settings' prefix and the cascade's name."""
    return f"{settings.feast_project}_{re.sub(r'[^A-Za-z0-9_]', '_', cascade)}"


def _feast_failures() -> tuple[type[Exception], ...]:
    """What Feast, its file store (pyarrow, dask) and its online stores raise on bad state.

    Feast is imported when a store is opened or fails, never with this module: it takes
    seconds, and ``FeastConfig`` alone is wanted by settings and tests.
    """
    from feast.errors import FeastError
    from redis.exceptions import RedisError

    return (FeastError, OSError, ValueError, KeyError, sqlite3.Error, RedisError)


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
    """A FeatureStore for ``config``: file offline store, SQLite or Redis online store.

    Relative paths in the user's definitions (a FileSource's ``path``) resolve against the
    repository folder, as ``feast apply`` run there would resolve them.
    """
    from feast import FeatureStore, RepoConfig

    state = config.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    online: dict[str, Any] = (
        {"type": "redis", "connection_string": _fail_fast(config.redis_url)}
        if config.online_store == "redis"
        else {"type": "sqlite", "path": str(state / "online.db")}
    )
    repo_path = (config.repo_dir or state).resolve()
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
        repo_path=repo_path,
    )
    return FeatureStore(repo_path=str(repo_path), config=repo_config)


def _fail_fast(connection: str) -> str:
    """Feast's Redis connection string plus the fail-fast options it does not set itself."""
    given = {part.split("=", 1)[0].strip() for part in connection.split(",") if "=" in part}
    return ",".join([connection, *(f"{k}={v}" for k, v in _REDIS_FAIL_FAST.items() if k not in given)])
