"""The feature store: a real Feast repository (file offline store, SQLite or Redis online).

The point-in-time test compares Feast's join with a brute-force as-of join (every order
against every snapshot of its customer), and traces each served value back to the one
snapshot it came from, to show that no value from after an order's time is used and
that expired values come back missing, not stale.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from returns_data import DemoData, generate_demo_data, write_demo_data

from skewguard.bentos.feature_store import OnlineFeatureReader
from skewguard.errors import ConfigError, InputError
from skewguard.pipeline.features import (
    FEATURE_NAMES,
    FEATURE_REFS,
    FEATURE_SERVICE,
    FeastConfig,
    apply_features,
    historical_features,
    materialize_features,
    open_store,
    teardown_features,
)
from skewguard.settings import Settings

TTL = pd.Timedelta(days=30)
QUIET = [100_001, 100_002, 100_003]  # customers whose snapshots stop at QUIET_SINCE
QUIET_SINCE = pd.Timestamp("2026-02-01", tz="UTC")
UNKNOWN = 999_999  # a customer without any snapshot
REDIS_URL = "127.0.0.1:6379"


@pytest.fixture(scope="module")
def data() -> DemoData:
    """2,000 orders of 200 customers; three customers go quiet on 1 February."""
    demo = generate_demo_data(n_orders=2_000, n_customers=200)
    stats = demo.customer_stats
    quiet = stats["customer_id"].isin(QUIET) & (stats["event_timestamp"] >= QUIET_SINCE)
    return DemoData(orders=demo.orders, customer_stats=stats[~quiet].reset_index(drop=True))


@pytest.fixture(scope="module")
def data_dir(data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("feast-data")
    write_demo_data(data, folder)
    return folder


def _config(
    tmp_path: Path, data_dir: Path, online_store: str = "sqlite", redis_url: str = REDIS_URL
) -> FeastConfig:
    """A project of its own per test (it is also the suffix of its Redis keys)."""
    project = f"sg_test_{uuid.uuid4().hex[:12]}"
    return FeastConfig(tmp_path / "feast", data_dir, project, online_store, redis_url)


@pytest.fixture
def sqlite_store(tmp_path: Path, data_dir: Path) -> FeastConfig:
    config = _config(tmp_path, data_dir)
    apply_features(config)
    return config


@pytest.fixture
def redis_store(tmp_path: Path, data_dir: Path) -> Iterator[FeastConfig]:
    """A project of its own on the real Redis; its keys are deleted afterwards."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.fail(
            "Redis is not running at 127.0.0.1:6379; start it with "
            "`redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no`."
        )
    config = _config(tmp_path, data_dir, online_store="redis", redis_url=REDIS_URL)
    apply_features(config)
    yield config
    teardown_features(config)
    leftover = list(client.scan_iter(match=b"*" + config.project.encode()))
    client.close()
    assert leftover == [], f"teardown left {len(leftover)} Redis keys of {config.project}"


def _latest_snapshots(stats: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Per customer, the newest snapshot in [start, end], indexed by customer_id."""
    window = stats[(stats["event_timestamp"] >= start) & (stats["event_timestamp"] <= end)]
    return window.sort_values("event_timestamp").groupby("customer_id").last()


def _expected_online(
    data: DemoData, ends: list[pd.Timestamp], ids: list[int]
) -> list[dict[str, float | None] | None]:
    """What reads give after materializing at each of ``ends`` in turn: later writes win."""
    values: dict[int, dict[str, float | None]] = {}
    for end in ends:
        latest = _latest_snapshots(data.customer_stats, end - TTL, end)
        values |= {int(i): {name: float(row[name]) for name in FEATURE_NAMES} for i, row in latest.iterrows()}
    return [values.get(i) for i in ids]


def _read_online(config: FeastConfig, ids: list[int]) -> list[dict[str, float | None] | None]:
    """What the gateway's reader gets (its batching and threads are tested in tests/gateway)."""
    return OnlineFeatureReader(config).read(ids)


def _check_online_reads(config: FeastConfig, data: DemoData) -> None:
    """Each materialization updates the reads to the latest values as of its ``end``."""
    ids = [*sorted(data.customer_stats["customer_id"].unique().tolist()), UNKNOWN, 100_050]
    ends = [pd.Timestamp("2026-03-01", tz="UTC"), pd.Timestamp("2026-05-15 12:00", tz="UTC")]
    for done_count, end in enumerate(ends, start=1):
        done = materialize_features(config, end=end.to_pydatetime())
        assert done.start == (end - TTL).to_pydatetime()
        assert _read_online(config, ids) == _expected_online(data, ends[:done_count], ids)
    assert _read_online(config, [UNKNOWN]) == [None]
    assert _read_online(config, []) == []


def test_apply_registers_the_repository_definitions(sqlite_store: FeastConfig) -> None:
    store = open_store(sqlite_store)
    service = store.get_feature_service(FEATURE_SERVICE)
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    assert sorted(refs) == sorted(FEATURE_REFS)
    assert store.get_feature_view("customer_stats").ttl == TTL.to_pytimedelta()
    assert (sqlite_store.state_dir / "registry.db").is_file()
    assert (sqlite_store.state_dir / "online.db").is_file()


def test_apply_keeps_state_out_of_the_source_tree(sqlite_store: FeastConfig) -> None:
    written = [p for p in sqlite_store.repo_dir.rglob("*") if p.suffix in {".db", ".pyc"}]
    assert written == []
    assert not (sqlite_store.repo_dir / "data").exists()


def test_sqlite_online_reads_follow_materialization(sqlite_store: FeastConfig, data: DemoData) -> None:
    _check_online_reads(sqlite_store, data)


@pytest.mark.integration
def test_redis_online_reads_follow_materialization(redis_store: FeastConfig, data: DemoData) -> None:
    _check_online_reads(redis_store, data)


def test_a_customer_without_a_fresh_snapshot_is_not_materialized(sqlite_store: FeastConfig) -> None:
    materialize_features(sqlite_store, end=datetime(2026, 5, 15, tzinfo=UTC))
    assert _read_online(sqlite_store, QUIET) == [None] * len(QUIET)


def test_online_values_outlive_their_ttl(sqlite_store: FeastConfig, data: DemoData) -> None:
    """Feast keeps a written value and ignores the TTL on reads: a quiet customer stays stale."""
    stats = data.customer_stats
    materialize_features(sqlite_store, end=datetime(2026, 2, 10, tzinfo=UTC))
    materialize_features(sqlite_store, end=datetime(2026, 5, 15, tzinfo=UTC))
    last = (
        stats[stats["customer_id"].isin(QUIET)].sort_values("event_timestamp").groupby("customer_id").last()
    )
    stale = [{name: float(last.at[i, name]) for name in FEATURE_NAMES} for i in QUIET]
    assert _read_online(sqlite_store, QUIET) == stale
    may = pd.DataFrame({"customer_id": QUIET, "order_ts": pd.Timestamp("2026-05-15", tz="UTC")})
    assert historical_features(sqlite_store, may)[list(FEATURE_NAMES)].isna().all().all()


def _brute_force_as_of(orders: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """For every order, the latest snapshot with order_ts - TTL <= event_timestamp <= order_ts."""
    keyed = orders[["customer_id", "order_ts"]].reset_index(drop=True).rename_axis("row").reset_index()
    pairs = keyed.merge(stats, on="customer_id")
    valid = pairs[
        (pairs["event_timestamp"] <= pairs["order_ts"])
        & (pairs["event_timestamp"] >= pairs["order_ts"] - TTL)
    ]
    best = valid.loc[valid.groupby("row")["event_timestamp"].idxmax()].set_index("row")
    return best.reindex(range(len(orders)))[["event_timestamp", *FEATURE_NAMES]]


def _probe_orders(data: DemoData) -> pd.DataFrame:
    """Edge cases: exactly at a snapshot, exactly TTL after it, long after going quiet, unknown."""
    stats, orders = data.customer_stats, data.orders
    snap = stats[stats["customer_id"] == 100_010].iloc[5]
    times = [
        (100_010, snap["event_timestamp"]),  # the snapshot's own time counts
        (100_010, snap["event_timestamp"] - pd.Timedelta(seconds=1)),  # one second before: the previous one
        (QUIET[0], QUIET_SINCE + pd.Timedelta(days=60)),  # last snapshot > 30 days old: missing
        (QUIET[1], QUIET_SINCE + pd.Timedelta(days=120)),
        (QUIET[2], QUIET_SINCE + pd.Timedelta(days=90)),
        (UNKNOWN, pd.Timestamp("2026-03-01", tz="UTC")),
    ]
    last = stats[stats["customer_id"] == QUIET[0]]["event_timestamp"].max()
    times += [(QUIET[0], last + TTL), (QUIET[0], last + TTL + pd.Timedelta(seconds=1))]  # TTL bounds
    probes = pd.DataFrame(times, columns=["customer_id", "order_ts"])
    probes["order_id"] = [f"probe{i}" for i in range(len(probes))]
    return pd.concat([orders[["order_id", "customer_id", "order_ts"]], probes], ignore_index=True)


def test_historical_features_are_point_in_time_correct(sqlite_store: FeastConfig, data: DemoData) -> None:
    orders = _probe_orders(data)
    orders = pd.concat([orders, orders.iloc[[3, 3, 17]]])  # repeated (customer, time) rows
    orders = orders.sample(frac=1.0, random_state=7).set_axis(np.arange(len(orders))[::-1] * 10)
    got = historical_features(sqlite_store, orders)

    assert got.index.equals(orders.index)
    assert got["order_id"].tolist() == orders["order_id"].tolist()
    expected = _brute_force_as_of(orders, data.customer_stats)
    for name in FEATURE_NAMES:
        assert got[name].dtype == np.float64
        np.testing.assert_array_equal(got[name].to_numpy(), expected[name].to_numpy(dtype="float64"))

    # account_age_days grows 7 a week: it names the snapshot a value came from.
    ages = data.customer_stats.set_index(["customer_id", "account_age_days"])["event_timestamp"]
    served = got.dropna(subset=["account_age_days"])
    source_ts = ages.loc[
        list(zip(served["customer_id"], served["account_age_days"].astype("int64"), strict=True))
    ].to_numpy()
    assert (source_ts <= served["order_ts"].to_numpy()).all(), "a value from after the order leaked"
    assert (source_ts >= (served["order_ts"] - TTL).to_numpy()).all(), "an expired value was served"
    assert 0.98 < len(served) / len(got) < 1.0  # almost all have a fresh snapshot; the probes do not

    by_id = got.set_index("order_id")
    missing = ["probe2", "probe3", "probe4", "probe5", "probe7"]
    assert by_id.loc[missing, list(FEATURE_NAMES)].isna().all().all(), "expired values must be NaN, not stale"
    assert by_id.loc[["probe0", "probe1", "probe6"], list(FEATURE_NAMES)].notna().all().all()
    snaps = data.customer_stats[data.customer_stats["customer_id"] == 100_010]
    assert by_id.at["probe0", "account_age_days"] == snaps["account_age_days"].iloc[5]
    assert by_id.at["probe1", "account_age_days"] == snaps["account_age_days"].iloc[4]


def test_historical_features_differ_from_the_latest_snapshot(
    sqlite_store: FeastConfig, data: DemoData
) -> None:
    got = historical_features(sqlite_store, data.orders)
    latest = data.customer_stats.sort_values("event_timestamp").groupby("customer_id").last()
    newest = latest.loc[got["customer_id"], "return_rate_90d"].to_numpy()
    assert (got["return_rate_90d"].to_numpy() != newest).mean() > 0.8  # a leak would make them equal


def test_historical_features_check_the_entity_frame(sqlite_store: FeastConfig, data: DemoData) -> None:
    with pytest.raises(InputError, match="order_ts") as missing:
        historical_features(sqlite_store, data.orders.drop(columns=["order_ts"]))
    assert missing.value.field == "order_ts"
    with pytest.raises(InputError, match="orders_30d"):
        historical_features(sqlite_store, data.orders.assign(orders_30d=1))
    with pytest.raises(InputError, match="timestamps"):
        historical_features(sqlite_store, data.orders.assign(order_ts="not a time"))
    empty = historical_features(sqlite_store, data.orders.iloc[:0])
    assert list(empty.columns) == [*data.orders.columns, *FEATURE_NAMES]
    assert empty.empty


def test_naive_timestamps_are_utc(sqlite_store: FeastConfig, data: DemoData) -> None:
    orders = data.orders.iloc[:50]
    naive = orders.assign(order_ts=orders["order_ts"].dt.tz_localize(None))
    pd.testing.assert_frame_equal(
        historical_features(sqlite_store, naive)[list(FEATURE_NAMES)],
        historical_features(sqlite_store, orders)[list(FEATURE_NAMES)],
    )


def test_unapplied_store_says_to_apply(tmp_path: Path, data_dir: Path, data: DemoData) -> None:
    config = _config(tmp_path, data_dir)
    with pytest.raises(ConfigError, match="skewguard features apply"):
        historical_features(config, data.orders.iloc[:5])
    with pytest.raises(ConfigError, match="skewguard features apply"):
        materialize_features(config, end=datetime(2026, 3, 1, tzinfo=UTC))


def test_config_is_checked_and_follows_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="memcached") as bad:
        FeastConfig(state_dir=tmp_path, data_dir=tmp_path, online_store="memcached")
    assert bad.value.field == "SKEWGUARD_ONLINE_STORE"
    with pytest.raises(ConfigError, match="host:port"):
        FeastConfig(state_dir=tmp_path, data_dir=tmp_path, online_store="redis", redis_url="redis://h:6379/0")
    with pytest.raises(ConfigError, match="project"):
        FeastConfig(state_dir=tmp_path, data_dir=tmp_path, project="my project")
    config = FeastConfig.from_settings(Settings(home=tmp_path))
    assert (config.state_dir, config.data_dir, config.online_store) == (
        tmp_path / "feast",
        tmp_path / "data",
        "sqlite",
    )


def test_materialize_end_is_utc_and_start_defaults_to_the_ttl(sqlite_store: FeastConfig) -> None:
    done = materialize_features(sqlite_store, end=datetime(2026, 3, 1, 12, 0))
    assert done.end == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert done.end - done.start == timedelta(days=30)
    explicit = materialize_features(sqlite_store, end=done.end, start=datetime(2026, 1, 1, tzinfo=UTC))
    assert explicit.start == datetime(2026, 1, 1, tzinfo=UTC)
