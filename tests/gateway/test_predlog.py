"""The prediction log: every record submitted is written once, even when the database is not.

SQLite tests need nothing running. The ``integration`` tests use the real PostgreSQL at
127.0.0.1:5432 (``SKEWGUARD_TEST_POSTGRES_URL`` overrides it), each in a table of its own
that is dropped afterwards, and one runs a gateway-like app under uvicorn to prove that
logged records equal successful responses across a SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from skewguard.bentos.images import encode_png
from skewguard.errors import ConfigError, PredictionLogError
from skewguard.gateway.metrics import GatewayMetrics
from skewguard.gateway.predlog import PredictionLog
from skewguard.predictionlog.records import PredictionRecord, image_summary, read_records
from skewguard.predictionlog.store import PRUNE_BATCH, SQLiteStore, open_store

POSTGRES_URL = os.environ.get("SKEWGUARD_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
CLOSED_PORT_URL = "postgresql://root@127.0.0.1:1/x"
ROOT = Path(__file__).resolve().parents[2]


def make_records(n: int, *, prefix: str = "req", rows_per_request: int = 2) -> list[PredictionRecord]:
    pixels = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    image = image_summary(encode_png(pixels), pixels)
    return [
        PredictionRecord(
            request_id=f"{prefix}-{i // rows_per_request}",
            row=i % rows_per_request,
            ts=1_700_000_000.0 + i * 0.001,
            cascade="support",
            fields={"amount": 12.5 + i, "comment": f"colis abîmé n°{i}", "photo": image, "when": None},
            online_features={"orders_30d": float(i % 7), "avg_basket": None},
            defaults_used=i % 3 == 0,
            prediction="refund" if i % 2 else 1,
            probabilities={"refund": 0.25, "keep": 0.75},
            route="specialist_b" if i % 2 else "specialist_a",
            versions={"router": "router:abc123", "specialist_a": "spec_a:def456"},
            flags=[{"field": "amount", "kind": "out_of_range"}] if i % 5 == 0 else [],
        )
        for i in range(n)
    ]


def all_written(n: int) -> dict[str, int]:
    """The stats of a log that wrote ``n`` records and nothing else happened."""
    return {"queued": 0, "written": n, "dropped": 0, "write_errors": 0, "duplicates": 0, "pruned": 0}


def as_dicts(records: Sequence[PredictionRecord]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(record) for record in records]


async def write_all(url: str, records: Sequence[PredictionRecord], **options: Any) -> dict[str, int]:
    log = PredictionLog.open(url, **options)
    await log.start()
    assert log.submit(records)
    await log.drain()
    return log.stats


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'logs' / 'predictions.db'}"


@pytest.fixture
def pg_table() -> Iterator[str]:
    table = f"predlog_test_{uuid.uuid4().hex[:12]}"
    yield table
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


class FlakyStore:
    """A real SQLite store that refuses every call while ``down`` is set, like a dead server."""

    def __init__(self, path: Path, *, write_delay: float = 0.0) -> None:
        self.inner = SQLiteStore(path, "predictions")
        self.description = "flaky " + self.inner.description
        self.down = False
        self.write_delay = write_delay
        self.attempts = 0

    def _check(self) -> None:
        self.attempts += 1
        if self.down:
            raise PredictionLogError("connection refused (simulated)", transient=True)

    def prepare(self) -> None:
        self._check()
        self.inner.prepare()

    def write(self, rows: Sequence[Sequence[Any]]) -> int:
        self._check()
        time.sleep(self.write_delay)
        return self.inner.write(rows)

    def count(self) -> int:
        self._check()
        return self.inner.count()

    def read(self, since: float | None, until: float | None, limit: int | None) -> list[dict[str, Any]]:
        return self.inner.read(since, until, limit)

    def prune(self, before: float, batch: int = PRUNE_BATCH) -> int:
        self._check()
        return self.inner.prune(before, batch)

    def close(self) -> None:
        self.inner.close()


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# --- SQLite: contents, batching, drain ---------------------------------------------------


def test_sqlite_records_read_back_exactly_as_submitted(tmp_path: Path) -> None:
    records = make_records(1_234)
    stats = asyncio.run(write_all(sqlite_url(tmp_path), records, batch_size=500))

    assert stats == all_written(1_234)
    assert read_records(sqlite_url(tmp_path)) == as_dicts(records)


def test_read_records_filters_by_time_and_limit(tmp_path: Path) -> None:
    records = make_records(100)
    asyncio.run(write_all(sqlite_url(tmp_path), records))

    window = read_records(sqlite_url(tmp_path), since=records[10].ts, until=records[20].ts)
    assert [r["ts"] for r in window] == [r.ts for r in records[10:20]]
    assert len(read_records(sqlite_url(tmp_path), limit=7)) == 7


def test_records_submitted_right_before_drain_are_all_written(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, float]:
        log = PredictionLog.open(sqlite_url(tmp_path), batch_size=10_000, flush_interval=60.0)
        await log.start()
        for record in make_records(777, rows_per_request=1):
            log.submit([record])
        started = time.monotonic()
        await log.drain()
        return log.stats["written"], time.monotonic() - started

    written, seconds = asyncio.run(scenario())
    assert written == 777
    assert seconds < 5  # drain does not wait for the flush interval
    assert len(read_records(sqlite_url(tmp_path))) == 777


def test_a_record_logged_twice_is_stored_once_and_counted(tmp_path: Path) -> None:
    records = make_records(10)
    stats = asyncio.run(write_all(sqlite_url(tmp_path), records + records[:3]))

    assert stats["written"] == 10
    assert stats["duplicates"] == 3
    assert len(read_records(sqlite_url(tmp_path))) == 10


def test_submit_after_drain_is_refused_and_counted(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, dict[str, int]]:
        log = PredictionLog.open(sqlite_url(tmp_path))
        await log.start()
        await log.drain()
        return log.submit(make_records(4)), log.stats

    accepted, stats = asyncio.run(scenario())
    assert not accepted
    assert stats["dropped"] == 4


def test_records_queued_by_a_log_never_started_are_counted_as_dropped(tmp_path: Path) -> None:
    async def scenario() -> dict[str, int]:
        log = PredictionLog.open(sqlite_url(tmp_path))
        log.submit(make_records(5))
        await log.drain()
        return log.stats

    assert asyncio.run(scenario()) == {
        "queued": 0,
        "written": 0,
        "dropped": 5,
        "write_errors": 0,
        "duplicates": 0,
        "pruned": 0,
    }


def test_count_and_read_go_through_the_running_log(tmp_path: Path) -> None:
    records = make_records(30)

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        log = PredictionLog.open(sqlite_url(tmp_path), flush_interval=0.01)
        await log.start()
        log.submit(records)
        await wait_until(lambda: log.stats["written"] == 30)
        try:
            return await log.count(), await log.read(limit=3)
        finally:
            await log.drain()

    count, first = asyncio.run(scenario())
    assert count == 30
    assert first == as_dicts(records[:3])


def test_numpy_values_and_nan_are_stored_as_json(tmp_path: Path) -> None:
    record = dataclasses.replace(
        make_records(1)[0],
        fields={"x": np.float32(0.5), "v": np.arange(3), "bad": math.nan},
        probabilities={"a": math.inf},
        prediction=np.int64(3),
    )
    asyncio.run(write_all(sqlite_url(tmp_path), [record]))

    (stored,) = read_records(sqlite_url(tmp_path))
    assert stored["fields"] == {"x": 0.5, "v": [0, 1, 2], "bad": None}
    assert stored["probabilities"] == {"a": None}
    assert stored["prediction"] == 3


# --- the event loop and an unavailable database -------------------------------------------


def test_a_slow_database_never_blocks_the_event_loop(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "slow.db", write_delay=0.3)

    async def scenario() -> float:
        log = PredictionLog(store, batch_size=10, flush_interval=0.01)
        await log.start()
        log.submit(make_records(50))
        worst = 0.0
        for _ in range(50):  # ticks of 10 ms while the writer sits in 300 ms writes
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - started)
        await log.drain()
        assert log.stats["written"] == 50
        return worst

    assert asyncio.run(scenario()) < 0.2  # a blocked loop would show the 300 ms write


def test_unreachable_database_keeps_serving_and_counts_every_drop() -> None:
    async def scenario() -> tuple[float, dict[str, int], dict[str, int], str | None]:
        log = PredictionLog.open(CLOSED_PORT_URL, max_queue=100, batch_size=10, max_backoff=0.05)
        await log.start()  # does not raise: serving must go on
        started = time.perf_counter()
        accepted = [log.submit([record]) for record in make_records(250, rows_per_request=1)]
        submit_seconds = time.perf_counter() - started
        assert accepted == [True] * 100 + [False] * 150
        await wait_until(lambda: log.stats["write_errors"] >= 3)
        during = log.stats
        await log.drain(timeout=0.3)
        return submit_seconds, during, log.stats, log.last_error

    submit_seconds, during, after, last_error = asyncio.run(scenario())
    assert submit_seconds < 0.05
    assert during["queued"] == 100
    assert during["dropped"] == 150
    assert during["written"] == 0
    assert after["queued"] == 0
    assert after["dropped"] == 250  # the 100 still queued at shutdown are counted too
    assert last_error is not None
    assert "127.0.0.1:1" in last_error


def test_buffered_records_are_written_once_the_database_returns(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "flaky.db")
    store.down = True
    records = make_records(300)

    async def scenario() -> dict[str, int]:
        log = PredictionLog(store, max_queue=1_000, batch_size=64, max_backoff=0.05)
        await log.start()
        log.submit(records)
        await wait_until(lambda: log.stats["write_errors"] >= 3)
        assert log.stats["queued"] == 300
        store.down = False
        await wait_until(lambda: log.stats["queued"] == 0)
        await log.drain()
        return log.stats

    stats = asyncio.run(scenario())
    assert stats["written"] == 300
    assert stats["dropped"] == 0
    assert stats["write_errors"] >= 3
    assert read_records(f"sqlite:///{tmp_path / 'flaky.db'}") == as_dicts(records)


# --- retention ----------------------------------------------------------------------------

DAY = 86_400.0


def _aged(records: Sequence[PredictionRecord], days: float) -> list[PredictionRecord]:
    """The same records, served ``days`` ago."""
    now = time.time()
    return [dataclasses.replace(record, ts=now - days * DAY + i * 1e-3) for i, record in enumerate(records)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_prune_deletes_exactly_the_older_records_batch_after_batch(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url, table = sqlite_url(tmp_path), "predictions"
    else:
        url, table = POSTGRES_URL, request.getfixturevalue("pg_table")
    records = make_records(25, rows_per_request=1)
    asyncio.run(write_all(url, records, table=table))
    store = open_store(url, table=table)
    try:
        assert store.prune(records[0].ts, batch=4) == 0  # nothing is older than the oldest
        assert store.prune(records[5].ts, batch=4) == 5  # a whole batch, then one row
        assert store.prune(records[17].ts, batch=4) == 12  # three whole batches, then none
        left = store.read(None, None, None)
    finally:
        store.close()
    assert [(r["request_id"], r["ts"]) for r in left] == [(r.request_id, r.ts) for r in records[17:]]


def test_a_retention_deletes_the_older_records_once_the_log_writes(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    old = _aged(make_records(30, prefix="old", rows_per_request=1), days=40)
    asyncio.run(write_all(url, old))  # logged by a gateway that kept everything
    recent = _aged(make_records(20, prefix="new", rows_per_request=1), days=29)

    async def scenario() -> tuple[dict[str, int], list[str]]:
        log = PredictionLog.open(url, retention_seconds=30 * DAY)
        metrics = GatewayMetrics()
        metrics.watch_log(lambda: log.stats)
        await log.start()
        log.submit(recent)
        await wait_until(lambda: log.stats["pruned"] == len(old))  # right after the first write
        await log.drain()
        return log.stats, metrics.render().decode().splitlines()

    stats, metrics = asyncio.run(scenario())
    assert (stats["written"], stats["pruned"], stats["write_errors"]) == (20, 30, 0)
    assert [r["request_id"] for r in read_records(url)] == [r.request_id for r in recent]
    # What an operator scrapes: the same figures as Prometheus counters.
    assert "# TYPE skewguard_prediction_log_pruned_total counter" in metrics
    assert "skewguard_prediction_log_pruned_total 30.0" in metrics
    assert "skewguard_prediction_log_written_total 20.0" in metrics
    assert "skewguard_prediction_log_write_errors_total 0.0" in metrics


def test_the_retention_runs_again_only_every_prune_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interval = 0.5
    monkeypatch.setattr("skewguard.gateway.predlog.PRUNE_EVERY_S", interval)
    first, second, third = (
        _aged(make_records(10, prefix=p, rows_per_request=1), days=2) for p in ("a", "b", "c")
    )

    async def scenario() -> list[int]:
        log = PredictionLog.open(sqlite_url(tmp_path), flush_interval=0.01, retention_seconds=DAY)
        await log.start()
        counts = []
        for batch, pause in ((first, 0.0), (second, 0.0), (third, interval)):
            await asyncio.sleep(pause)
            log.submit(batch)
            await wait_until(lambda: log.stats["queued"] == 0)
            counts.append(await log.count())
        await log.drain()
        return counts

    # The first write prunes (its own rows are already older than a day); the second comes
    # within the interval and stays; the third, after it, prunes both.
    assert asyncio.run(scenario()) == [0, 10, 0]


def test_a_retention_that_is_not_positive_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="retention") as caught:
        PredictionLog.open(sqlite_url(tmp_path), retention_seconds=0)
    assert caught.value.field == "retention"


def test_the_gateway_setting_gives_the_log_its_retention_and_a_negative_one_is_refused(
    tmp_path: Path,
) -> None:
    from skewguard.gateway.features import StaticFeatureSource
    from skewguard.gateway.server import build_gateway
    from skewguard.gateway.settings import GatewaySettings

    def retention(**env: str) -> float | None:
        settings = GatewaySettings.from_env({"SKEWGUARD_HOME": str(tmp_path), **env})
        return build_gateway(settings, features=StaticFeatureSource({})).log.retention_seconds

    assert retention() is None  # by default the log keeps everything
    assert retention(SKEWGUARD_LOG_RETENTION_DAYS="0") is None
    assert retention(SKEWGUARD_LOG_RETENTION_DAYS="2.5") == 2.5 * DAY
    with pytest.raises(ConfigError) as caught:
        retention(SKEWGUARD_LOG_RETENTION_DAYS="-1")
    assert caught.value.field == "SKEWGUARD_LOG_RETENTION_DAYS"


# --- configuration and images --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "table"),
    [
        ("mysql://x@y/z", "predictions"),
        ("sqlite:///", "predictions"),
        ("postgresql://a@b:notaport/x?nonsense=1", "predictions"),
        ("sqlite:///x.db", "predictions; DROP TABLE x"),
    ],
)
def test_bad_urls_and_table_names_are_config_errors(url: str, table: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url, table=table)


def test_bad_queue_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_queue"):
        PredictionLog.open(sqlite_url(tmp_path), max_queue=0)


def test_image_summary_identifies_the_image_without_holding_its_bytes() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    png = encode_png(pixels)
    text = base64.b64encode(png).decode()

    from_bytes = image_summary(png)
    from_text = image_summary(text)
    from_pixels = image_summary(png, pixels)

    assert from_bytes == from_text == from_pixels
    assert set(from_bytes) == {"sha256", "n_bytes", "brightness", "contrast", "channel_means"}
    assert from_bytes["n_bytes"] == len(png)
    assert from_bytes["brightness"] == pytest.approx(float(pixels.mean()))
    assert from_bytes["contrast"] == pytest.approx(float(pixels.std()))
    stored = json.dumps(from_bytes)
    assert len(stored) < 300
    assert text[:40] not in stored
    assert all(not isinstance(v, bytes) for v in from_bytes.values())


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.integration
def test_postgres_records_read_back_exactly_as_submitted(pg_table: str) -> None:
    records = make_records(1_234)
    stats = asyncio.run(write_all(POSTGRES_URL, records, table=pg_table, batch_size=500))

    assert stats == all_written(1_234)
    assert read_records(POSTGRES_URL, table=pg_table) == as_dicts(records)


@pytest.mark.integration
def test_postgres_counts_duplicates_and_sets_refused_rows_aside(pg_table: str) -> None:
    records = make_records(20)
    poisoned = dataclasses.replace(records[5], fields={"comment": "nul \x00 byte"})  # JSONB refuses \u0000
    stats = asyncio.run(
        write_all(POSTGRES_URL, [*records[:5], poisoned, *records[6:], records[0]], table=pg_table)
    )

    assert stats["written"] == 19
    assert stats["duplicates"] == 1
    assert stats["dropped"] == 1
    assert stats["write_errors"] == 1
    assert read_records(POSTGRES_URL, table=pg_table) == as_dicts(records[:5] + records[6:])


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _proxy_to_postgres(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL)
    host, port = str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432)))
    server_reader, server_writer = await asyncio.open_connection(host, port)
    await asyncio.gather(_forward(client_reader, server_writer), _forward(server_reader, client_writer))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration
def test_postgres_down_then_up_writes_everything_buffered(pg_table: str) -> None:
    port = free_port()
    info = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL)
    via_proxy = f"postgresql://{info.get('user', 'root')}@127.0.0.1:{port}/{info['dbname']}"
    records = make_records(400)

    async def scenario() -> dict[str, int]:
        log = PredictionLog.open(via_proxy, table=pg_table, batch_size=100, max_backoff=0.1)
        await log.start()  # nothing listens on the port yet: the database is "down"
        log.submit(records)
        await wait_until(lambda: log.stats["write_errors"] >= 3)
        assert log.stats == {
            "queued": 400,
            "written": 0,
            "dropped": 0,
            "write_errors": log.stats["write_errors"],
            "duplicates": 0,
            "pruned": 0,
        }
        server = await asyncio.start_server(_proxy_to_postgres, "127.0.0.1", port)  # it comes back
        await wait_until(lambda: log.stats["queued"] == 0)
        await log.drain()
        server.close()
        return log.stats

    stats = asyncio.run(scenario())
    assert stats["written"] == 400
    assert stats["dropped"] == 0
    assert read_records(POSTGRES_URL, table=pg_table) == as_dicts(records)


# --- graceful shutdown under uvicorn ------------------------------------------------------

APP = """
import contextlib, os, time, uuid
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from skewguard.gateway.predlog import PredictionLog
from skewguard.predictionlog.records import PredictionRecord

log = PredictionLog.open(os.environ["LOG_URL"], table=os.environ["LOG_TABLE"], batch_size=100_000,
                         flush_interval=30.0)

async def predict(request):
    body = await request.json()
    rid = uuid.uuid4().hex
    log.submit([PredictionRecord(rid, 0, time.time(), "c", body, {}, False, 1, {}, "r", {}, [])])
    return JSONResponse({"request_id": rid})

@contextlib.asynccontextmanager
async def lifespan(app):
    await log.start()
    yield
    await log.drain()

app = Starlette(routes=[Route("/predict", predict, methods=["POST"])], lifespan=lifespan)
"""


async def _hammer(url: str, signal_after: int, process: subprocess.Popen[bytes]) -> list[str]:
    """16 clients post until the server goes; SIGTERM once ``signal_after`` responses were served."""
    served: list[str] = []
    signalled = False

    async def client(client_id: int, http: httpx.AsyncClient) -> None:
        nonlocal signalled
        i = 0
        while True:
            if len(served) >= signal_after and not signalled:
                signalled = True
                process.send_signal(signal.SIGTERM)  # once, mid-traffic: a graceful shutdown
            try:
                response = await http.post(url, json={"client": client_id, "i": i})
            except httpx.TransportError:
                return  # the server has gone: stop
            if response.status_code == 200:
                served.append(response.json()["request_id"])
            i += 1

    async with httpx.AsyncClient(timeout=10) as http:
        await asyncio.gather(*(client(c, http) for c in range(16)))
    return served


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_logged_records_equal_successful_responses_across_sigterm(
    tmp_path: Path, pg_table: str, backend: str
) -> None:
    (tmp_path / "logapp.py").write_text(APP)
    url = sqlite_url(tmp_path) if backend == "sqlite" else POSTGRES_URL
    port = free_port()
    env = {**os.environ, "LOG_URL": url, "LOG_TABLE": pg_table, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    command = [sys.executable, "-m", "uvicorn", "logapp:app", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path)
    try:
        for _ in range(200):
            try:
                httpx.post(f"http://127.0.0.1:{port}/predict", json={"warmup": True}).raise_for_status()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        served = asyncio.run(_hammer(f"http://127.0.0.1:{port}/predict", 300, process))
        # uvicorn re-raises the signal once its graceful shutdown is done
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()

    logged = read_records(url, table=pg_table)
    assert len(served) >= 300  # the signal came mid-traffic
    assert {r["request_id"] for r in logged} == {*served, logged[0]["request_id"]}  # + the warm-up
    assert len(logged) == len(served) + 1
