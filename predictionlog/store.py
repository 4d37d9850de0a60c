"""The prediction log's table: one SQL schema, written to SQLite or PostgreSQL.

A store is synchronous and owned by one thread at a time; ``skewguard.gateway.predlog`` runs it in
its own single-thread executor so that no database call ever blocks the event loop.
Database errors are wrapped here, once, in ``PredictionLogError``: ``transient`` ones
(connection refused, server gone, database locked) are worth retrying after the store
reconnects; the others belong to particular rows (a string PostgreSQL refuses), so the
caller writes the rows one by one and sets the bad ones aside.

Writes are idempotent: ``(request_id, row)`` is the primary key and a row already present
is skipped (counted as a duplicate), so a batch retried after an ambiguous commit is not
logged twice.

Each row also says which variant answered it (``variant``: the champion, or a canary
candidate), how long that variant took for the request (``latency_ms``), and — when a
shadow ran the same row, or a canary failed and the champion answered instead — the
candidate's own answer, latency and skew flags, or its error (``candidate``). A table
written before those columns existed is upgraded in place when a store first connects
(``ALTER TABLE ... ADD COLUMN``, on SQLite and PostgreSQL alike): its rows read as the
champion's, without a latency or a candidate.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
from collections.abc import Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any, ClassVar, Protocol

import orjson

from skewguard.errors import ConfigError, PredictionLogError

COLUMNS = (
    "request_id",
    "row",
    "ts",
    "cascade",
    "route",
    "prediction",
    "defaults_used",
    "fields",
    "online_features",
    "probabilities",
    "versions",
    "flags",
    "variant",
    "latency_ms",
    "candidate",
)
"""The table's columns, in the order ``write`` expects each row's values."""
JSON_COLUMNS = frozenset(
    {"prediction", "fields", "online_features", "probabilities", "versions", "flags", "candidate"}
)
UPGRADE_COLUMNS = ("variant", "latency_ms", "candidate")
"""The columns a table written by an earlier version lacks; added when a store connects."""
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")
_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT_S = 5
PRUNE_BATCH = 5_000
"""Rows ``prune`` deletes per transaction: the writer's inserts wait for one batch at most."""


class LogStore(Protocol):
    """Where prediction records are kept: one table, created on first use."""

    description: str

    def prepare(self) -> None:
        """Connect, and create the table and its index if they are missing."""

    def write(self, rows: Sequence[Sequence[Any]]) -> int:
        """Insert rows (values in ``COLUMNS`` order); return how many were new."""

    def count(self) -> int:
        """How many records the table holds."""

    def read(self, since: float | None, until: float | None, limit: int | None) -> list[dict[str, Any]]:
        """Records with ``since <= ts < until``, oldest first, as dicts keyed by column."""

    def prune(self, before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete the records with ``ts < before``, at most ``batch`` per transaction; how many."""

    def close(self) -> None:
        """Release the connection (the store reconnects if used again)."""


def open_store(url: str, *, table: str = "predictions") -> LogStore:
    """The store for ``sqlite:///path`` or ``postgresql://user@host:port/db``."""
    if not _TABLE_NAME.match(table):
        raise ConfigError(
            f"Prediction log table {table!r}: expected letters, digits and underscores "
            "(at most 51, not starting with a digit).",
            field="table",
        )
    if url.startswith(_SQLITE_PREFIX) and len(url) > len(_SQLITE_PREFIX):
        return SQLiteStore(Path(url[len(_SQLITE_PREFIX) :]), table)
    if url.startswith(_POSTGRES_SCHEMES):
        import psycopg  # only for PostgreSQL logs: ~20 MB the default SQLite gateway does not carry
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ConfigError(
                f"Prediction log URL is not a valid PostgreSQL URL: {exc}", field="url"
            ) from exc
        return PostgresStore(url, table)
    scheme = f"{url.split('://')[0]}://..." if "://" in url else "no scheme"  # never echo a password
    raise ConfigError(
        "Prediction log URL: expected 'sqlite:///path/to/log.db' or "
        f"'postgresql://user@host:port/db', got {scheme!r}.",
        field="url",
    )


def to_json(value: Any) -> str:
    """JSON text for a column: numpy values become numbers, NaN/inf become null, bytes a hash."""
    try:  # orjson: ~5x the stdlib here, and encoding is most of a write's cost
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except orjson.JSONEncodeError:  # bytes, non-string keys, huge ints, odd objects
        return json.dumps(_plain(value), allow_nan=False, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"sha256": sha256(bytes(value)).hexdigest(), "n_bytes": len(value)}
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return _plain(value.tolist())
    return str(value)


def _encode(row: Sequence[Any]) -> tuple[Any, ...]:
    """Values in ``COLUMNS`` order, as the database binds them (coerced, so binding cannot fail)."""
    request_id, row_number, ts, cascade, route, prediction, defaults_used, *documents = row[:12]
    variant, latency_ms, candidate = row[12:]
    return (
        str(request_id),
        int(row_number),
        float(ts),
        str(cascade),
        str(route),
        to_json(prediction),
        bool(defaults_used),
        *(to_json(document) for document in documents),
        str(variant),
        _finite_or_none(latency_ms),
        None if candidate is None else to_json(candidate),
    )


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class _SQLStore:
    """The SQL both dialects share; subclasses connect and map errors."""

    placeholder: ClassVar[str]
    json_type: ClassVar[str]
    bool_type: ClassVar[str]
    row_id: ClassVar[str]
    """The dialect's physical row address, for deleting in batches."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._conn: Any = None
        self.errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError)
        """The database's own errors and the OS's: what a failed call may raise."""

    def _connect(self) -> Any:
        raise NotImplementedError

    def _transaction(self, conn: Any) -> Any:
        return conn  # sqlite3: the connection's context manager commits or rolls back

    def _wrap(self, exc: Exception, doing: str) -> PredictionLogError:
        raise NotImplementedError

    def _schema(self) -> list[str]:
        t, added = self.table, ", ".join(self._upgrade_sql().values())
        return [
            f'CREATE TABLE IF NOT EXISTS "{t}" (request_id TEXT NOT NULL, "row" INTEGER NOT NULL, '
            f"ts DOUBLE PRECISION NOT NULL, cascade TEXT NOT NULL, route TEXT NOT NULL, "
            f"prediction {self.json_type}, defaults_used {self.bool_type} NOT NULL, "
            f"fields {self.json_type} NOT NULL, online_features {self.json_type} NOT NULL, "
            f"probabilities {self.json_type} NOT NULL, versions {self.json_type} NOT NULL, "
            f'flags {self.json_type} NOT NULL, {added}, PRIMARY KEY (request_id, "row"))',
            f'CREATE INDEX IF NOT EXISTS "{t}_ts_idx" ON "{t}" (ts)',
        ]

    def _upgrade_sql(self) -> dict[str, str]:
        """Each column an older table lacks, as ``ADD COLUMN`` and ``CREATE TABLE`` declare it."""
        return {
            "variant": "variant TEXT NOT NULL DEFAULT 'champion'",
            "latency_ms": "latency_ms DOUBLE PRECISION",
            "candidate": f"candidate {self.json_type}",
        }

    def _columns(self, conn: Any) -> set[str]:
        """The columns the table has now."""
        raise NotImplementedError

    def _upgrade(self, conn: Any) -> None:
        """Add the columns a table written by an earlier version lacks (several writers may race)."""
        missing = [name for name in UPGRADE_COLUMNS if name not in self._columns(conn)]
        for name in missing:
            self._add_column(conn, self._upgrade_sql()[name])

    def _add_column(self, conn: Any, declaration: str) -> None:
        conn.execute(f'ALTER TABLE "{self.table}" ADD COLUMN {declaration}')

    def _insert_sql(self) -> str:
        names = ", ".join(f'"{name}"' for name in COLUMNS)
        values = ", ".join(self._value_sql(name) for name in COLUMNS)
        return (
            f'INSERT INTO "{self.table}" ({names}) VALUES ({values}) '
            'ON CONFLICT (request_id, "row") DO NOTHING'
        )

    def _value_sql(self, name: str) -> str:
        return self.placeholder

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self._connect()
            try:
                with self._transaction(conn):
                    for statement in self._schema():
                        conn.execute(statement)
                self._upgrade(conn)
            except self.errors:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _run(self, doing: str, work: Any) -> Any:
        """Call ``work(connection)`` in a transaction; wrap and reconnect on failure."""
        try:
            conn = self._connection()
            with self._transaction(conn):
                return work(conn)
        except self.errors as exc:
            error = self._wrap(exc, doing)
            if error.transient:
                self.close()
            raise error from exc

    def prepare(self) -> None:
        self._run("create the table", lambda conn: None)

    def write(self, rows: Sequence[Sequence[Any]]) -> int:
        encoded = [_encode(row) for row in rows]
        sql = self._insert_sql()

        def insert(conn: Any) -> int:
            cursor = conn.cursor()
            cursor.executemany(sql, encoded)
            return int(cursor.rowcount)

        return int(self._run(f"write {len(rows)} records", insert))

    def count(self) -> int:
        sql = f'SELECT COUNT(*) FROM "{self.table}"'
        return int(self._run("count records", lambda conn: conn.execute(sql).fetchone()[0]))

    def read(self, since: float | None, until: float | None, limit: int | None) -> list[dict[str, Any]]:
        names = ", ".join(f'"{name}"' for name in COLUMNS)
        where, params = [], []
        if since is not None:
            where.append(f"ts >= {self.placeholder}")
            params.append(since)
        if until is not None:
            where.append(f"ts < {self.placeholder}")
            params.append(until)
        sql = f'SELECT {names} FROM "{self.table}"'
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        sql += ' ORDER BY ts, request_id, "row"'
        sql += f" LIMIT {int(limit)}" if limit is not None else ""
        rows = self._run("read records", lambda conn: conn.execute(sql, params).fetchall())
        return [self._decode(row) for row in rows]

    def prune(self, before: float, batch: int = PRUNE_BATCH) -> int:
        t, p, row_id = self.table, self.placeholder, self.row_id
        sql = (
            f'DELETE FROM "{t}" WHERE {row_id} IN '
            f'(SELECT {row_id} FROM "{t}" WHERE ts < {p} LIMIT {int(batch)})'
        )
        deleted = 0
        while True:
            count = int(self._run("delete old records", lambda conn: conn.execute(sql, (before,)).rowcount))
            deleted += count
            if count < batch:
                return deleted

    def _decode(self, row: Sequence[Any]) -> dict[str, Any]:
        return dict(zip(COLUMNS, row, strict=True))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # The connection is being thrown away; its own errors on closing change nothing.
            with contextlib.suppress(*self.errors):
                conn.close()


class SQLiteStore(_SQLStore):
    """The default: a SQLite file in WAL mode, so the monitor can read while we write."""

    placeholder = "?"
    json_type = "TEXT"
    bool_type = "INTEGER"
    row_id = "rowid"

    def __init__(self, path: Path, table: str) -> None:
        super().__init__(table)
        self.path = path
        self.description = f"sqlite at {path}"

    def _connect(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=CONNECT_TIMEOUT_S)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        return conn

    def _columns(self, conn: Any) -> set[str]:
        return {str(row[1]) for row in conn.execute(f'PRAGMA table_info("{self.table}")')}

    def _add_column(self, conn: Any, declaration: str) -> None:
        try:
            with conn:
                super()._add_column(conn, declaration)
        except sqlite3.OperationalError as exc:  # another writer added it first
            if "duplicate column" not in str(exc):
                raise

    def _wrap(self, exc: Exception, doing: str) -> PredictionLogError:
        transient = not isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.InterfaceError)
        return PredictionLogError(
            f"Prediction log ({self.description}): could not {doing}: {exc}", transient=transient
        )

    def _decode(self, row: Sequence[Any]) -> dict[str, Any]:
        record = dict(zip(COLUMNS, row, strict=True))
        for name in JSON_COLUMNS:
            record[name] = json.loads(record[name]) if record[name] is not None else None
        record["defaults_used"] = bool(record["defaults_used"])
        return record


class PostgresStore(_SQLStore):
    """PostgreSQL by URL; JSON columns are JSONB so the monitor can query inside them."""

    placeholder = "%s"
    json_type = "JSONB"
    bool_type = "BOOLEAN"
    row_id = "ctid"

    def __init__(self, url: str, table: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        super().__init__(table)
        self.url = url
        self.errors = (psycopg.Error, OSError)
        info = conninfo_to_dict(url)
        self.description = (
            f"postgresql at {info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        )

    def _value_sql(self, name: str) -> str:
        return "%s::jsonb" if name in JSON_COLUMNS else "%s"

    def _columns(self, conn: Any) -> set[str]:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (self.table,),
        ).fetchall()
        return {str(row[0]) for row in rows}

    def _add_column(self, conn: Any, declaration: str) -> None:
        """Under an advisory lock, and only if still missing: ALTER waits for every reader of the table."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"skewguard-upgrade:{self.table}",))
            conn.execute(f'ALTER TABLE "{self.table}" ADD COLUMN IF NOT EXISTS {declaration}')

    def _connect(self) -> Any:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        options: dict[str, Any] = {"application_name": "skewguard-predlog"}
        if "connect_timeout" not in conninfo_to_dict(self.url):
            options["connect_timeout"] = CONNECT_TIMEOUT_S
        return psycopg.connect(self.url, autocommit=True, **options)

    def _transaction(self, conn: Any) -> Any:
        return conn.transaction()  # psycopg's connection context manager would close it

    def _wrap(self, exc: Exception, doing: str) -> PredictionLogError:
        import psycopg

        transient = not isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PredictionLogError(
            f"Prediction log ({self.description}): could not {doing}: {message}", transient=transient
        )
