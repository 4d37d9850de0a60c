"""The log's table on SQLite and PostgreSQL: each variant's answer kept; an older table upgraded in place."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from skewguard.predictionlog.records import PredictionRecord, read_records
from skewguard.predictionlog.store import COLUMNS, open_store

POSTGRES_URL = "postgresql://root@127.0.0.1:5432/test"
OLD_SCHEMA = (
    'CREATE TABLE "{t}" (request_id TEXT NOT NULL, "row" INTEGER NOT NULL, ts DOUBLE PRECISION NOT NULL, '
    "cascade TEXT NOT NULL, route TEXT NOT NULL, prediction {j}, defaults_used {b} NOT NULL, "
    "fields {j} NOT NULL, online_features {j} NOT NULL, probabilities {j} NOT NULL, versions {j} NOT NULL, "
    'flags {j} NOT NULL, PRIMARY KEY (request_id, "row"))'
)
OLD_ROW = ("old-1", 0, 1_700_000_000.0, "returns", "retail", "1", True, "{}", "{}", "{}", "{}", "[]")
SHADOWED = {
    "variant": "shadow",
    "version": "cascade-returns:v2",
    "prediction": 0,
    "probabilities": {"0": 0.7, "1": 0.3},
    "route": "retail",
    "flags": [{"kind": "out_of_range", "field": "price", "detail": "above the training range"}],
    "latency_ms": 1.25,
}


def _record(request_id: str, **changes: object) -> PredictionRecord:
    values: dict[str, object] = {
        "request_id": request_id,
        "row": 0,
        "ts": 1_700_000_100.0,
        "cascade": "returns",
        "fields": {"price": 12.5},
        "online_features": {"orders_30d": 3.0},
        "defaults_used": False,
        "prediction": 1,
        "probabilities": {"0": 0.4, "1": 0.6},
        "route": "retail",
        "versions": {"cascade": "cascade-returns:v1"},
        "flags": [],
        **changes,
    }
    return PredictionRecord(**values)  # type: ignore[arg-type]


def _write(url: str, table: str, records: list[PredictionRecord]) -> None:
    store = open_store(url, table=table)
    try:
        store.write([tuple(getattr(record, c) for c in COLUMNS) for record in records])
    finally:
        store.close()


@pytest.fixture
def pg_table() -> Iterator[str]:
    table = f"store_test_{uuid.uuid4().hex[:12]}"
    yield table
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def _check_upgraded(url: str, table: str) -> None:
    """The old row reads as the champion's; new rows keep the variant, latency and candidate."""
    shadowed = _record("new-1", latency_ms=2.5, candidate=SHADOWED)
    canary = _record("new-2", variant="canary", latency_ms=3.0, versions={"cascade": "cascade-returns:v2"})
    _write(url, table, [shadowed, canary])
    old, *new = read_records(url, table=table)
    assert (old["request_id"], old["variant"], old["latency_ms"], old["candidate"]) == (
        "old-1",
        "champion",
        None,
        None,
    )
    assert (new[0]["variant"], new[0]["latency_ms"], new[0]["candidate"]) == ("champion", 2.5, SHADOWED)
    assert (new[1]["variant"], new[1]["candidate"]) == ("canary", None)


def test_an_older_sqlite_table_gets_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "predictions.db"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_SCHEMA.format(t="predictions", j="TEXT", b="INTEGER"))
        conn.execute(f"INSERT INTO predictions VALUES ({', '.join('?' * len(OLD_ROW))})", OLD_ROW)
    _check_upgraded(f"sqlite:///{path}", "predictions")
    open_store(f"sqlite:///{path}").prepare()  # a second writer finds it upgraded: nothing to do, no error


def test_two_writers_upgrading_one_sqlite_table_at_once_both_succeed(tmp_path: Path) -> None:
    path = tmp_path / "predictions.db"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_SCHEMA.format(t="predictions", j="TEXT", b="INTEGER"))
    first, second = open_store(f"sqlite:///{path}"), open_store(f"sqlite:///{path}")
    first._columns = second._columns = lambda conn: set()  # type: ignore[attr-defined,method-assign]
    first.prepare()
    second.prepare()  # finds each column there already when it adds it
    _write(f"sqlite:///{path}", "predictions", [_record("new-1", candidate=SHADOWED)])
    assert read_records(f"sqlite:///{path}")[0]["candidate"] == SHADOWED


@pytest.mark.integration
def test_an_older_postgres_table_gets_the_new_columns_and_keeps_its_rows(pg_table: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(OLD_SCHEMA.format(t=pg_table, j="JSONB", b="BOOLEAN"))
        conn.execute(f'INSERT INTO "{pg_table}" VALUES ({", ".join(["%s"] * len(OLD_ROW))})', OLD_ROW)
    _check_upgraded(POSTGRES_URL, pg_table)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        kinds = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
                (pg_table,),
            ).fetchall()
        )
    assert (kinds["variant"], kinds["latency_ms"], kinds["candidate"]) == (
        "text",
        "double precision",
        "jsonb",
    )
