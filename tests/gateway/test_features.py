"""Online features for the request path, against a real Feast store (SQLite, and the real Redis).

The store holds the demo's customer snapshots materialized as of ``END``; every test
reads it through :class:`FeastFeatureSource`, counting the real SDK calls where batching
is the point. Slow and stalled calls are Feast's own call held in its worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from returns_data import DemoData, generate_demo_data, write_demo_data

from skewguard.bentos.feature_store import OnlineFeatureReader
from skewguard.errors import ConfigError, FeatureStoreUnavailable
from skewguard.gateway.features import FeastFeatureSource, StaticFeatureSource
from skewguard.pipeline.features import (
    FEATURE_NAMES,
    FeastConfig,
    apply_features,
    materialize_features,
    teardown_features,
)

END = pd.Timestamp("2026-04-01", tz="UTC")  # mid-history: most customers have newer snapshots
UNKNOWN = 999_999
REDIS = ("127.0.0.1", 6379)

Rows = list[dict[str, float | None] | None]


@pytest.fixture(scope="module")
def data() -> DemoData:
    return generate_demo_data(n_orders=1_500, n_customers=150)


@pytest.fixture(scope="module")
def data_dir(data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("feast-data")
    write_demo_data(data, folder)
    return folder


def _config(state: Path, data_dir: Path, online_store: str = "sqlite", redis_url: str = "") -> FeastConfig:
    """A project of its own (it is also the suffix of its Redis keys)."""
    project = f"sg_gw_{uuid.uuid4().hex[:12]}"
    return FeastConfig(state, data_dir, project, online_store, redis_url or f"{REDIS[0]}:{REDIS[1]}")


def _materialized(config: FeastConfig) -> FeastConfig:
    """Applied, and every customer's latest snapshot up to END written (whatever its age)."""
    apply_features(config)
    materialize_features(config, end=END.to_pydatetime(), start=datetime(2025, 1, 1, tzinfo=UTC))
    return config


@pytest.fixture(scope="module")
def sqlite_store(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FeastConfig:
    return _materialized(_config(tmp_path_factory.mktemp("feast-sqlite"), data_dir))


@pytest.fixture(scope="module")
def redis_store(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastConfig]:
    """A project of its own on the real Redis; its keys are deleted afterwards."""
    client = redis.Redis(*REDIS)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.fail(
            "Redis is not running at 127.0.0.1:6379; start it with "
            "`redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no`."
        )
    state = tmp_path_factory.mktemp("feast-redis")
    config = _materialized(_config(state, data_dir, online_store="redis"))
    yield config
    teardown_features(config)
    leftover = list(client.scan_iter(match=b"*" + config.project.encode()))
    client.close()
    assert leftover == [], f"teardown left {len(leftover)} Redis keys of {config.project}"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> FeastConfig:
    config: FeastConfig = request.getfixturevalue(f"{request.param}_store")
    return config


@pytest.fixture
def expected(data: DemoData) -> Callable[[list[int]], Rows]:
    """Each customer's latest snapshot at or before END; None for a customer without one."""
    stats = data.customer_stats
    known = stats[stats["event_timestamp"] <= END]
    latest = known.sort_values("event_timestamp").groupby("customer_id").last()
    rows = {int(i): {name: float(row[name]) for name in FEATURE_NAMES} for i, row in latest.iterrows()}
    return lambda ids: [rows.get(i) for i in ids]


@pytest.fixture
def sdk_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of ids of every real read of the online store, in order."""
    calls: list[int] = []
    real = OnlineFeatureReader.read

    def counted(reader: OnlineFeatureReader, entity_ids: Sequence[int]) -> Any:
        calls.append(len(entity_ids))
        return real(reader, entity_ids)

    monkeypatch.setattr(OnlineFeatureReader, "read", counted)
    return calls


class _Stall:
    """Holds the store read in its worker thread until released (or for ``hold`` seconds)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold: float = 5.0) -> None:
        self.on = False
        self.hold = hold
        self.release = threading.Event()
        real = OnlineFeatureReader.read

        def stalled(reader: OnlineFeatureReader, entity_ids: Sequence[int]) -> Any:
            if self.on:
                self.release.wait(self.hold)
            return real(reader, entity_ids)

        monkeypatch.setattr(OnlineFeatureReader, "read", stalled)


def _customers(data: DemoData) -> list[int]:
    return sorted(int(i) for i in data.customer_stats["customer_id"].unique())


def test_known_customers_get_their_latest_snapshot_as_of_materialization(
    store: FeastConfig, data: DemoData, expected: Callable[[list[int]], Rows]
) -> None:
    ids = [*_customers(data), UNKNOWN]

    async def scenario() -> Rows:
        source = FeastFeatureSource(store)
        try:
            await source.ping()
            return await source.get(ids)
        finally:
            await source.close()

    got = asyncio.run(scenario())
    assert got == expected(ids)
    assert got[-1] is None
    assert all(row is not None for row in got[:-1])
    newest = data.customer_stats.sort_values("event_timestamp").groupby("customer_id").last()
    later = [
        row["return_rate_90d"] != newest.at[i, "return_rate_90d"]
        for i, row in zip(ids[:-1], got[:-1], strict=True)
    ]
    assert sum(later) > 50, "END should sit before many customers' newest snapshot"


def test_order_repeats_and_unknown_entities(
    sqlite_store: FeastConfig, expected: Callable[[list[int]], Rows]
) -> None:
    ids = [100_020, UNKNOWN, 100_007, 100_020, -5]

    async def scenario() -> tuple[Rows, Rows, Rows]:
        source = FeastFeatureSource(sqlite_store)
        try:
            return await source.get(ids), await source.get([]), await source.get([UNKNOWN])
        finally:
            await source.close()

    got, empty, unknown = asyncio.run(scenario())
    assert got == expected(ids)
    assert got[1] is None
    assert got[4] is None
    assert got[0] == got[3]
    assert got[0] is not got[3]  # copies: a caller may change its rows
    assert empty == []
    assert unknown == [None]


def test_concurrent_gets_are_gathered_into_few_sdk_calls(
    store: FeastConfig, data: DemoData, expected: Callable[[list[int]], Rows], sdk_calls: list[int]
) -> None:
    customers = [*_customers(data), UNKNOWN]
    burst = [[customers[(7 * k) % len(customers)]] for k in range(200)]
    burst[10] = [customers[3], UNKNOWN, customers[3]]  # several ids in one request
    steady_rounds = 10

    async def caller(source: FeastFeatureSource, k: int) -> bool:
        ok = True
        for r in range(steady_rounds):
            ids = [customers[(k * 31 + r) % len(customers)]]
            ok &= await source.get(ids) == expected(ids)
        return ok

    async def scenario() -> tuple[list[Rows], int, list[bool], int]:
        source = FeastFeatureSource(store)
        try:
            await source.ping()
            calls_before = len(sdk_calls)
            answers = await asyncio.gather(*(source.get(ids) for ids in burst))
            burst_calls = len(sdk_calls) - calls_before
            steady = await asyncio.gather(*(caller(source, k) for k in range(64)))
            return list(answers), burst_calls, list(steady), source.calls
        finally:
            await source.close()

    answers, burst_calls, steady, calls = asyncio.run(scenario())
    assert answers == [expected(ids) for ids in burst]
    assert burst_calls <= 4, f"200 concurrent gets took {burst_calls} SDK calls"  # ≤ 151 distinct ids / 64
    assert all(steady)
    steady_calls = len(sdk_calls) - 1 - burst_calls
    assert steady_calls < 64 * steady_rounds / 8, f"{64 * steady_rounds} gets took {steady_calls} SDK calls"
    assert calls == len(sdk_calls)
    assert max(sdk_calls) <= 64


def test_the_event_loop_keeps_running_during_a_slow_call(
    sqlite_store: FeastConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    stall = _Stall(monkeypatch, hold=0.4)

    async def scenario() -> tuple[float, list[float]]:
        source = FeastFeatureSource(sqlite_store, timeout=5.0)
        beats: list[float] = []

        async def heartbeat() -> None:
            while True:
                beats.append(time.monotonic())
                await asyncio.sleep(0.005)

        try:
            await source.ping()
            stall.on = True
            ticking = asyncio.create_task(heartbeat())
            started = time.monotonic()
            await source.get([100_001])
            took = time.monotonic() - started
            ticking.cancel()
            return took, beats
        finally:
            await source.close()

    took, beats = asyncio.run(scenario())
    assert took >= 0.4
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert len(beats) > 20, f"only {len(beats)} heartbeats in {took:.2f} s"
    assert max(gaps) < 0.2, f"the event loop stalled for {max(gaps):.3f} s"  # blocked, it would be ≥ 0.4 s


def test_a_call_over_the_timeout_is_unavailable_and_the_source_recovers(
    sqlite_store: FeastConfig, monkeypatch: pytest.MonkeyPatch, expected: Callable[[list[int]], Rows]
) -> None:
    stall = _Stall(monkeypatch)

    async def scenario() -> tuple[float, float, Rows]:
        source = FeastFeatureSource(sqlite_store, timeout=0.1)
        try:
            await source.ping()
            stall.on = True
            started = time.monotonic()
            with pytest.raises(FeatureStoreUnavailable, match=r"did not answer 1 ids within 0\.1 s"):
                await source.get([100_001])
            first = time.monotonic() - started
            started = time.monotonic()  # the stalled call still holds the worker: fail fast, no pile-up
            with pytest.raises(FeatureStoreUnavailable, match="has not answered"):
                await source.get([100_002])
            second = time.monotonic() - started
            stall.on = False
            stall.release.set()
            await asyncio.sleep(0.05)
            return first, second, await source.get([100_003])
        finally:
            stall.release.set()
            await source.close()

    first, second, recovered = asyncio.run(scenario())
    assert first < 1.0
    assert second < 1.0
    assert recovered == expected([100_003])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_stopped_redis_is_unavailable_quickly(data_dir: Path, tmp_path: Path) -> None:
    port = _closed_port()
    config = _config(tmp_path / "feast", data_dir, online_store="redis", redis_url=f"127.0.0.1:{port}")
    apply_features(config)  # the registry is a file: only the online store is missing

    async def scenario() -> float:
        source = FeastFeatureSource(config)
        started = time.monotonic()
        try:
            with pytest.raises(FeatureStoreUnavailable, match=rf"redis at 127\.0\.0\.1:{port}"):
                await source.ping()
            with pytest.raises(FeatureStoreUnavailable, match="ConnectionError"):
                await asyncio.gather(*(source.get([100_000 + k]) for k in range(20)))
            return time.monotonic() - started
        finally:
            await source.close()

    assert asyncio.run(scenario()) < 2.0  # redis-py's default retries would take 5-10 s per call


class _Cuttable:
    """A TCP relay to the real Redis that can be cut: Redis stopping under a running source."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(REDIS)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65_536):
                target.sendall(chunk)
        except OSError:
            pass

    def cut(self) -> None:
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.integration
def test_redis_stopping_under_a_running_source_is_unavailable_quickly(
    redis_store: FeastConfig, expected: Callable[[list[int]], Rows]
) -> None:
    relay = _Cuttable()
    config = FeastConfig(
        redis_store.state_dir, redis_store.data_dir, redis_store.project, "redis", f"127.0.0.1:{relay.port}"
    )

    async def scenario() -> tuple[Rows, float]:
        source = FeastFeatureSource(config)
        try:
            before = await source.get([100_001])
            relay.cut()
            started = time.monotonic()
            for _ in range(3):
                with pytest.raises(FeatureStoreUnavailable):
                    await source.get([100_001])
            return before, time.monotonic() - started
        finally:
            relay.cut()
            await source.close()

    before, took = asyncio.run(scenario())
    assert before == expected([100_001])
    assert took < 2.0


def test_an_unapplied_store_says_to_apply(data_dir: Path, tmp_path: Path) -> None:
    source = FeastFeatureSource(_config(tmp_path / "feast", data_dir))
    with pytest.raises(ConfigError, match="skewguard features apply"):
        asyncio.run(source.ping())


def test_close_serves_what_is_queued_then_refuses(
    sqlite_store: FeastConfig, expected: Callable[[list[int]], Rows]
) -> None:
    ids = [[100_000 + k] for k in range(10)]

    others = set(threading.enumerate())  # earlier tests' sources, some never closed

    def feast_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "feast-online" and t not in others]

    async def scenario() -> list[Rows]:
        source = FeastFeatureSource(sqlite_store)
        assert feast_threads() == []  # started by the first read, in the process that reads
        pending = [asyncio.create_task(source.get(i)) for i in ids]
        cancelled = asyncio.create_task(source.get([100_011]))
        await asyncio.sleep(0)  # all queued
        cancelled.cancel()
        await source.close()
        await source.close()  # twice is fine
        with pytest.raises(FeatureStoreUnavailable, match="closed"):
            await source.get([100_001])
        return [await task for task in pending]

    assert asyncio.run(scenario()) == [expected(i) for i in ids]
    for thread in feast_threads():  # the worker ends once the store is released
        thread.join(timeout=5)
    assert feast_threads() == []


def test_source_settings_are_checked(sqlite_store: FeastConfig) -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        FeastFeatureSource(sqlite_store, max_batch=0)
    with pytest.raises(ConfigError, match="timeout"):
        FeastFeatureSource(sqlite_store, timeout=0)


def test_static_source_answers_from_its_dict() -> None:
    source = StaticFeatureSource({7: {"orders_30d": 2.0, "return_rate_90d": None}})

    async def scenario() -> Rows:
        got = await source.get([7, 8, 7])
        assert got[0] is not None
        got[0]["orders_30d"] = 99.0  # a copy
        again = await source.get([7])
        source.available = False
        with pytest.raises(FeatureStoreUnavailable):
            await source.ping()
        await source.close()
        return [*got, *again]

    rows = asyncio.run(scenario())
    row = {"orders_30d": 2.0, "return_rate_90d": None}
    assert rows[1:] == [None, row, row]  # the caller's change did not reach the source
    assert source.feature_names == ("orders_30d", "return_rate_90d")
    assert (source.calls, source.closed) == (2, True)
