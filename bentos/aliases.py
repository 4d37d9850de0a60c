"""Where the champion alias lives: a file in the model store, a Redis key, or a PostgreSQL row.

The alias of a cascade names its champion manifest, the champions it replaced, and — when
the models were exported to a shared location (``skewguard.bentos.exports``) — the sha256
of each exported archive, so a replica that imports them checks what it read against a
record it trusts. Three stores, one contract (``AliasStore``): ``get`` reads one cascade's
alias, ``update`` replaces it atomically (a read-modify-write no concurrent promotion can
interleave with), and a reader sees the old or the new alias, never a torn one.

    FileAliasStore      ``cascade_aliases.json`` in the BentoML home: os.replace under flock.
                        The default: every process on one machine shares that folder.
    RedisAliasStore     one key per cascade, replaced in a WATCH/MULTI transaction.
    PostgresAliasStore  one row per cascade, replaced under a transaction-scoped advisory lock.

Which store a process uses is set once at start-up (``configure``, from
``SKEWGUARD_ALIAS_URL`` and ``SKEWGUARD_MODEL_EXPORT`` read by the CLI); unset, it is the
file. A store that cannot be reached raises ``SharedStateUnavailable``: a gateway keeps
serving the champion it has and says so on ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from skewguard.errors import ArtifactError, ConfigError, SharedStateUnavailable

if TYPE_CHECKING:
    import psycopg
    import redis

ALIASES_FILE = "cascade_aliases.json"
ALIAS_SETTING = "SKEWGUARD_ALIAS_URL"
DEFAULT_NAMESPACE = "skewguard"
TABLE = "skewguard_cascade_aliases"
CONNECT_TIMEOUT_S = 2
"""A store that does not answer within this is unreachable: the caller goes on without it."""


class Alias(BaseModel):
    """One cascade's alias: its champion, the champions before it, and their exported archives."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    champion: str
    promoted_at: AwareDatetime
    retired: list[str] = Field(default_factory=list)
    archives: dict[str, str] = Field(default_factory=dict)
    """Model tag → sha256 of its archive in the model export (empty when nothing was exported)."""


class AliasBook(BaseModel):
    """The alias file's content: every cascade's alias."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    cascades: dict[str, Alias] = Field(default_factory=dict)


Change = Callable[[Alias | None], Alias]
"""Given the current alias (None when the cascade has none yet), the alias to store instead."""


class AliasStore(Protocol):
    """Where the champion aliases live."""

    @property
    def description(self) -> str:
        """The store in words, without credentials, for messages."""
        ...

    def get(self, name: str) -> Alias | None:
        """The alias of cascade ``name``; None when none was promoted."""
        ...

    def update(self, name: str, change: Change) -> Alias:
        """Replace the alias of ``name`` by ``change(current)``, atomically; the stored alias."""
        ...

    def names(self) -> list[str]:
        """The cascades that have an alias."""
        ...


@dataclass(frozen=True, slots=True)
class Sharing:
    """What the processes of one deployment share: the alias store and, optionally, the model export."""

    aliases: AliasStore
    export: str | None = None
    """Folder or fsspec URL of the model export; None keeps the models in the local store only."""


class FileAliasStore:
    """The alias file in the BentoML home (``home`` None: BentoML's configured home, read per call)."""

    def __init__(self, home: Path | None = None) -> None:
        self._home = home

    @property
    def path(self) -> Path:
        if self._home is not None:
            return self._home / ALIASES_FILE
        from bentoml._internal.configuration.containers import BentoMLContainer

        return Path(BentoMLContainer.bentoml_home.get()) / ALIASES_FILE

    @property
    def description(self) -> str:
        return f"the alias file {self.path}"

    def get(self, name: str) -> Alias | None:
        return self.read().cascades.get(name)

    def names(self) -> list[str]:
        return list(self.read().cascades)

    def read(self) -> AliasBook:
        """Every cascade's alias (the file is small and replaced whole)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return AliasBook()
        try:
            return AliasBook.model_validate_json(data)
        except ValidationError as exc:
            raise ArtifactError(f"The cascade alias file {self.path} is malformed: {exc}") from exc

    def update(self, name: str, change: Change) -> Alias:
        with self._locked():
            book = self.read()
            alias = change(book.cascades.get(name))
            self._write(AliasBook(cascades={**book.cascades, name: alias}))
        return alias

    def _write(self, book: AliasBook) -> None:
        """Write to a temporary file beside the target, fsync, then rename over it (atomic on POSIX)."""
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{ALIASES_FILE}.", suffix=".tmp")
        try:
            # mkstemp makes it 0600: readable like the model store's files instead, so a gateway
            # running as another user (a container's) can follow promotions made here.
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as file:
                file.write(json.dumps(book.model_dump(mode="json"), indent=1, sort_keys=True).encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise promotions (read-modify-write of the alias file) across processes."""
        lock = self.path.with_suffix(".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _namespace(url: str) -> tuple[str, str]:
    """The URL without skewguard's own ``namespace`` query parameter, and that namespace."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    namespace = next((value for key, value in query if key == "namespace"), DEFAULT_NAMESPACE)
    rest = urlencode([(key, value) for key, value in query if key != "namespace"])
    return urlunsplit(parts._replace(query=rest)), namespace


def _redacted(url: str) -> str:
    """``scheme://host:port/path``: no user, password or query in messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisAliasStore:
    """One key per cascade (``<namespace>:cascade-alias:<name>``), replaced in a transaction."""

    def __init__(self, url: str) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        plain, self.namespace = _namespace(url)
        self._where = _redacted(plain)
        self._client: redis.Redis = redis.Redis.from_url(
            plain,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # fail at once: the caller keeps serving what it has
        )

    @property
    def description(self) -> str:
        return f"Redis at {self._where}"

    def key(self, name: str) -> str:
        return f"{self.namespace}:cascade-alias:{name}"

    def get(self, name: str) -> Alias | None:
        with self._translated():
            raw: bytes | None = self._client.get(self.key(name))  # type: ignore[assignment]
        return _parsed(raw, self.description)

    def names(self) -> list[str]:
        prefix = self.key("")
        with self._translated():
            keys = list(self._client.scan_iter(match=f"{prefix}*"))
        return [key.decode()[len(prefix) :] for key in keys]

    def update(self, name: str, change: Change) -> Alias:
        import redis

        key = self.key(name)
        with self._translated(), self._client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    current: bytes | None = pipe.get(key)  # type: ignore[assignment]  # immediate after WATCH
                    alias = change(_parsed(current, self.description))
                    pipe.multi()
                    pipe.set(key, alias.model_dump_json())
                    pipe.execute()
                    return alias
                except redis.WatchError:  # another promotion got in between: read again
                    continue

    @contextmanager
    def _translated(self) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.RedisError as exc:
            raise SharedStateUnavailable(
                f"The champion alias store ({self.description}) cannot be reached: {exc}.",
                field=ALIAS_SETTING,
            ) from exc


class PostgresAliasStore:
    """One row per cascade in ``skewguard_cascade_aliases``; one connection per process, reopened."""

    def __init__(self, url: str) -> None:
        self._url, self.namespace = _namespace(url)
        self._where = _redacted(self._url)
        self._connection: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"PostgreSQL at {self._where}"

    def get(self, name: str) -> Alias | None:
        import psycopg

        with self._session() as connection:
            try:
                row = connection.execute(
                    f"SELECT alias FROM {TABLE} WHERE namespace = %s AND cascade = %s",
                    (self.namespace, name),
                ).fetchone()
            except psycopg.errors.UndefinedTable:  # nothing was ever promoted here
                return None
        return None if row is None else _parsed(json.dumps(row[0]).encode(), self.description)

    def names(self) -> list[str]:
        import psycopg

        with self._session() as connection:
            try:
                rows = connection.execute(
                    f"SELECT cascade FROM {TABLE} WHERE namespace = %s", (self.namespace,)
                ).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
        return [str(row[0]) for row in rows]

    def update(self, name: str, change: Change) -> Alias:
        with self._session() as connection:
            self._create_table(connection)
            with connection.transaction():
                connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{TABLE}:{self.namespace}:{name}",)
                )
                row = connection.execute(
                    f"SELECT alias FROM {TABLE} WHERE namespace = %s AND cascade = %s",
                    (self.namespace, name),
                ).fetchone()
                current = None if row is None else _parsed(json.dumps(row[0]).encode(), self.description)
                alias = change(current)
                connection.execute(
                    f"INSERT INTO {TABLE} (namespace, cascade, alias) VALUES (%s, %s, %s) "
                    "ON CONFLICT (namespace, cascade) DO UPDATE SET alias = EXCLUDED.alias",
                    (self.namespace, name, alias.model_dump_json()),
                )
        return alias

    @staticmethod
    def _create_table(connection: psycopg.Connection[Any]) -> None:
        """The table, once; concurrent creators serialised by an advisory lock (writers only)."""
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (namespace text NOT NULL, cascade text NOT NULL, "
                "alias jsonb NOT NULL, PRIMARY KEY (namespace, cascade))"
            )

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        """The process's connection (opened on first use, dropped after a failure); errors translated."""
        import psycopg

        with self._lock:
            try:
                if self._connection is None or self._connection.closed:
                    self._connection = psycopg.connect(
                        self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                    )
                yield self._connection
            except psycopg.OperationalError as exc:
                if self._connection is not None:
                    self._connection.close()
                self._connection = None
                raise SharedStateUnavailable(
                    f"The champion alias store ({self.description}) cannot be reached: {exc}.",
                    field=ALIAS_SETTING,
                ) from exc


def _parsed(raw: bytes | str | None, where: str) -> Alias | None:
    if raw is None:
        return None
    try:
        return Alias.model_validate_json(raw)
    except ValidationError as exc:
        raise ArtifactError(f"The champion alias in {where} is malformed: {exc}") from exc


def open_alias_store(url: str | None) -> AliasStore:
    """The store ``url`` names: None or ``file:`` for the model store's file, ``redis://``, ``postgresql://``."""
    scheme = urlsplit(url).scheme if url else "file"
    if scheme == "file":
        return FileAliasStore()
    if scheme in {"redis", "rediss", "unix"}:
        return RedisAliasStore(str(url))
    if scheme in {"postgresql", "postgres"}:
        return PostgresAliasStore(str(url))
    raise ConfigError(
        f"{ALIAS_SETTING} {_redacted(str(url))!r} is not supported: expected redis://host:port/db, "
        "postgresql://user@host/db, or nothing for a file in the model store.",
        field=ALIAS_SETTING,
    )


_configured: Sharing | None = None


def configure(alias_url: str | None = None, model_export: str | None = None) -> Sharing:
    """Set, for this process, where the alias lives and where models are exported (at start-up)."""
    global _configured  # one setting per process, as BentoML's home is
    _configured = Sharing(open_alias_store(alias_url), model_export or None)
    return _configured


def sharing() -> Sharing:
    """What ``configure`` set; unconfigured, the model store's alias file and no export."""
    return _configured or Sharing(FileAliasStore())


@contextmanager
def configured(alias_url: str | None, model_export: str | None = None) -> Iterator[Sharing]:
    """``configure`` for the duration of a block, then back to what was set before."""
    global _configured
    before = _configured
    try:
        yield configure(alias_url, model_export)
    finally:
        _configured = before
