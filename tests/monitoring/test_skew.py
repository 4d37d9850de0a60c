"""Online–offline feature skew: the pure comparison, the served frame, and a real Feast store.

The integration tests build a real Feast repository (SQLite online store, file offline
store) in a temporary folder, read the served values through the gateway's own online
reader after materializing, and log them as the gateway's ``PredictionRecord`` does. They
then let the offline store move on without materializing again, or let the TTL pass, and
check that exactly the affected entities and features show up.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from returns_data import DemoData, generate_demo_data, write_demo_data

from skewguard.bentos.feature_store import FEATURE_NAMES, FEATURE_REFS, FeastConfig, OnlineFeatureReader
from skewguard.bentos.manifest import CascadeManifest, promote, save_manifest
from skewguard.cli import cli
from skewguard.errors import ConfigError
from skewguard.monitoring.findings import Verdict
from skewguard.monitoring.job import check_drift
from skewguard.monitoring.skew import (
    EVENT_TS,
    FeastOfflineFeatures,
    SkewCheck,
    SkewPolicy,
    check_skew,
    compare_features,
    served_frame,
    training_scales,
)
from skewguard.monitoring.verdict import DriftPolicy, with_skew
from skewguard.pipeline.features import (
    apply_features,
    historical_features,
    latest_event_time,
    materialize_features,
)
from skewguard.predictionlog.records import PredictionRecord
from skewguard.predictionlog.store import COLUMNS
from skewguard.predictionlog.store import open_store as open_log
from tests.monitoring.conftest import WATCHED

KEY = "customer_id"
DEFAULTS = {"orders_30d": 0.0, "return_rate_90d": 0.1, "account_age_days": 365.0}


def _frame(**columns: Sequence[float]) -> pd.DataFrame:
    return pd.DataFrame({name: np.asarray(values, dtype=np.float64) for name, values in columns.items()})


# --- the pure comparison -------------------------------------------------------------------------


def test_equal_values_have_no_mismatch() -> None:
    values = np.linspace(0, 10, 50)
    found = compare_features(_frame(a=values), _frame(a=values.copy()), ["a"])
    a = found.feature("a")
    assert (a.rows, a.mismatches, a.mismatch_rate, a.both_present) == (50, 0, 0.0, 50)
    assert (a.mean_abs_diff, a.max_abs_diff, a.skewed) == (0.0, 0.0, False)
    assert found.skewed_features == ()
    assert found.reasons() == ()


def test_a_known_shift_gives_its_rate_and_distance() -> None:
    offline = np.arange(100, dtype=np.float64)
    served = offline.copy()
    served[:25] += 2.0  # a quarter of the rows served 2 more than the offline store holds
    found = compare_features(
        _frame(a=served, b=offline), _frame(a=offline, b=offline), ["a", "b"], scales={"a": 4.0, "b": 1.0}
    )
    a, b = found.feature("a"), found.feature("b")
    assert (a.differ, a.missing_online, a.missing_offline) == (25, 0, 0)
    assert a.mismatch_rate == pytest.approx(0.25)
    assert a.mean_abs_diff == pytest.approx(0.5)
    assert a.max_abs_diff == pytest.approx(2.0)
    assert a.normalized_mean_abs_diff == pytest.approx(0.125)
    assert a.skewed
    assert (b.mismatches, b.skewed) == (0, False)
    assert found.skewed_features == ("a",)
    (reason,) = found.reasons()
    assert reason.startswith("feature skew: a ")
    assert "25.0% of 100 rows" in reason


def test_missing_sides_are_counted_apart() -> None:
    served = np.ones(20)
    offline = np.ones(20)
    served[[0, 1, 2]] = np.nan  # the gateway had no online value: missing online
    offline[[3, 4, 5, 6, 7]] = np.nan  # no snapshot within the TTL: missing offline
    served[[8, 9]] = offline[[8, 9]] = np.nan  # both missing: they agree
    a = compare_features(_frame(a=served), _frame(a=offline), ["a"]).feature("a")
    assert (a.missing_online, a.missing_offline, a.differ, a.both_present) == (3, 5, 0, 10)
    assert a.mismatches == 8
    assert a.mismatch_rate == pytest.approx(8 / 20)
    assert a.mean_abs_diff == 0.0


def test_tolerance_and_threshold_are_the_policy() -> None:
    offline = np.full(200, 1000.0)
    served = offline + 1e-7  # float noise, not skew
    served[0] = 1001.0  # one row in 200: 0.5 %
    policy = SkewPolicy(max_mismatch_rate=0.01)
    a = compare_features(_frame(a=served), _frame(a=offline), ["a"], policy=policy).feature("a")
    assert (a.differ, a.skewed) == (1, False)
    strict = compare_features(
        _frame(a=served), _frame(a=offline), ["a"], policy=SkewPolicy(max_mismatch_rate=0.001)
    )
    assert strict.feature("a").skewed
    exact = SkewPolicy(atol=0.0, rtol=0.0)
    assert (
        compare_features(_frame(a=served), _frame(a=offline), ["a"], policy=exact).feature("a").differ == 200
    )


def test_examples_name_the_mismatching_entities() -> None:
    served = pd.DataFrame({KEY: [7, 3, 5, 3, 9], "a": [1.0, 2.0, 3.0, 4.0, np.nan]})
    offline = _frame(a=[1.0, 2.5, 3.0, 4.5, 1.0])
    a = compare_features(served, offline, ["a"], entity_key=KEY).feature("a")
    assert a.examples == (3, 9)
    assert a.to_dict()["examples"] == [3, 9]


def test_bad_inputs_are_config_errors_naming_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="3 rows and the offline one 2"):
        compare_features(_frame(a=[1, 2, 3]), _frame(a=[1, 2]), ["a"])
    with pytest.raises(ConfigError, match="'b'") as missing:
        compare_features(_frame(a=[1]), _frame(a=[1]), ["b"])
    assert missing.value.field == "b"
    with pytest.raises(ConfigError, match="max_mismatch_rate"):
        SkewPolicy(max_mismatch_rate=1.5)
    with pytest.raises(ConfigError, match="tolerances"):
        SkewPolicy(atol=-1.0)


def test_the_summary_is_json_ready() -> None:
    found = compare_features(_frame(a=[1.0, np.nan]), _frame(a=[np.nan, np.nan]), ["a"])
    data = found.to_dict()
    assert data["features"]["a"]["missing_offline"] == 1
    assert data["features"]["a"]["mean_abs_diff"] is None  # no row had both sides
    assert data["skewed"] == ["a"]
    assert data["max_mismatch_rate"] == 0.01


# --- records → the served frame ----------------------------------------------------------------------


def _record(
    key: Any,
    ts: Any,
    online: Mapping[str, float | None],
    flags: Sequence[Mapping[str, str]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A prediction-log record as ``skewguard.gateway.predlog`` stores it (the gateway's own dataclass)."""
    record = PredictionRecord(
        request_id=uuid.uuid4().hex,
        row=0,
        ts=ts,
        cascade="returns",
        fields={KEY: key, "price": 10.0, **extra},
        online_features=dict(online),
        defaults_used=bool(flags),
        prediction=0,
        probabilities={"0": 0.9, "1": 0.1},
        route="retail",
        versions={},
        flags=[dict(flag) for flag in flags],
    )
    return dataclasses.asdict(record)


def test_defaulted_features_count_as_missing_online() -> None:
    online = {"orders_30d": 3.0, "return_rate_90d": 0.1, "account_age_days": 365.0}
    flag = {"kind": "missing_online_feature", "field": "return_rate_90d", "detail": ""}
    down = {"kind": "feature_store_unavailable", "field": "*", "detail": ""}
    records = [
        _record(1, 1_780_000_000.0, online),
        _record(2, 1_780_000_000.0, online, [flag]),
        _record(3, 1_780_000_000.0, online, [down]),
    ]
    frame, notes = served_frame(records, KEY, FEATURE_NAMES)
    assert notes == ()
    assert frame[KEY].tolist() == [1, 2, 3]
    assert frame["orders_30d"].tolist()[:2] == [3.0, 3.0]
    assert math.isnan(frame.at[1, "return_rate_90d"])  # the default the gateway used is not an online value
    assert frame.loc[2, list(FEATURE_NAMES)].isna().all()
    legacy = {**records[0], "defaults_used": True}  # defaults used, no flag naming which
    assert served_frame([legacy], KEY, FEATURE_NAMES)[0].loc[0, list(FEATURE_NAMES)].isna().all()


def test_rows_without_key_or_time_are_left_out_with_a_note() -> None:
    online = dict.fromkeys(FEATURE_NAMES, 1.0)
    records = [
        _record(1, 1_780_000_000.0, online, order_ts="2026-03-01T10:00:00+00:00"),
        _record(None, 1_780_000_000.0, online),
        _record("7", 1_780_000_000.0, online),
        _record(2, 1_780_000_000.0, online, order_ts="not a time"),
    ]
    frame, notes = served_frame(records, KEY, FEATURE_NAMES)
    assert frame[KEY].tolist() == [1, 2]
    assert frame[EVENT_TS].tolist() == [pd.Timestamp(1_780_000_000.0, unit="s", tz="UTC")] * 2
    assert notes == ("2 rows without an integer customer_id were left out",)
    precise, _ = served_frame([_record(1, 1_780_000_000.123456789, online)], KEY, FEATURE_NAMES)
    assert precise.at[0, EVENT_TS] == pd.Timestamp("2026-05-28 20:26:40.123456", tz="UTC")  # µs, as Feast
    by_field, notes = served_frame(records, KEY, FEATURE_NAMES, at="order_ts")
    assert by_field[EVENT_TS].tolist() == [pd.Timestamp("2026-03-01T10:00:00", tz="UTC")]
    assert notes[-1] == "1 rows without a readable order_ts were left out"


def test_an_empty_window_or_a_cascade_without_online_features_is_no_skew(tmp_path: Path) -> None:
    offline = FeastOfflineFeatures(FeastConfig(tmp_path / "feast", tmp_path / "data"))  # never asked
    empty = check_skew([], _manifest(), offline)
    assert [(f.rows, f.mismatch_rate, f.skewed) for f in empty.features] == [(0, None, False)] * 3
    assert empty.reasons() == ()
    plain = _manifest().model_copy(update={"entity_key": None, "feature_refs": {}})
    assert check_skew([_record(1, 1.0, {})], plain, offline).notes == (
        "cascade 'returns' reads no online features",
    )


# --- a real Feast store ---------------------------------------------------------------------------

QUIET = [100_001, 100_002, 100_003]  # customers whose snapshots stop on QUIET_SINCE
QUIET_SINCE = pd.Timestamp("2026-02-01", tz="UTC")
LATE_ORDERS = [100_010, 100_011, 100_012]  # a new snapshot changes orders_30d only
LATE_RETURNS = [100_020, 100_021]  # a new snapshot changes return_rate_90d only


@pytest.fixture(scope="module")
def quiet_demo() -> DemoData:
    """1,000 orders of 60 customers over four months; three customers go quiet on 1 February."""
    data = generate_demo_data(n_orders=1_000, n_customers=60, days=120)
    stats = data.customer_stats
    quiet = stats[KEY].isin(QUIET) & (stats[EVENT_TS] >= QUIET_SINCE)
    return DemoData(orders=data.orders, customer_stats=stats[~quiet].reset_index(drop=True))


@pytest.fixture
def store(tmp_path: Path, quiet_demo: DemoData) -> FeastConfig:
    """A Feast repository of its own: demo data written, definitions applied, nothing materialized."""
    write_demo_data(quiet_demo, tmp_path / "data")
    config = FeastConfig(tmp_path / "feast", tmp_path / "data", f"sg_skew_{uuid.uuid4().hex[:12]}")
    apply_features(config)
    return config


def _manifest() -> CascadeManifest:
    """Only the fields the skew check reads matter: the entity key and the online features."""
    return CascadeManifest(
        name="returns",
        router={"tag": "router:1", "threshold": 0.5},
        branches={"reseller": "reseller:1", "retail": "retail:1"},
        entity_key=KEY,
        feature_refs={name: ref for name, ref in zip(FEATURE_NAMES, FEATURE_REFS, strict=True)},
        input_spec={"fields": [{"name": "price", "kind": "numeric", "nullable": False}]},
    )


def _serve(config: FeastConfig, ids: list[int], at: datetime) -> list[dict[str, Any]]:
    """What the gateway logs: online values from its reader, defaults and flags where it had none."""
    read = OnlineFeatureReader(config).read(ids)
    records = []
    for key, values in zip(ids, read, strict=True):
        absent = [n for n in FEATURE_NAMES if values is None or values.get(n) is None]
        online = {n: DEFAULTS[n] if n in absent else (values or {})[n] for n in FEATURE_NAMES}
        flags = [{"kind": "missing_online_feature", "field": n, "detail": ""} for n in absent]
        records.append(_record(key, at.timestamp(), online, flags))
    return records


def _customers(demo: DemoData) -> list[int]:
    return sorted(int(k) for k in demo.customer_stats[KEY].unique())


def _check(config: FeastConfig, records: list[dict[str, Any]], demo: DemoData) -> Any:
    scales = training_scales(demo.customer_stats, FEATURE_NAMES)
    return check_skew(records, _manifest(), FeastOfflineFeatures(config), scales=scales)


@pytest.mark.slow
def test_no_skew_right_after_materializing(store: FeastConfig, quiet_demo: DemoData) -> None:
    now = latest_event_time(store)
    materialize_features(store, end=now)
    records = _serve(store, _customers(quiet_demo) * 2, now)  # each customer twice: repeated (key, time)
    found = _check(store, records, quiet_demo)
    assert [f.feature for f in found.features] == list(FEATURE_NAMES)
    for feature in found.features:
        assert (feature.rows, feature.mismatches, feature.skewed) == (120, 0, False), feature
        assert feature.max_abs_diff == 0.0
    # The quiet customers were not materialized (no snapshot within the TTL): both sides missing.
    assert found.feature("orders_30d").both_present == 120 - 2 * len(QUIET)


@pytest.mark.slow
def test_offline_rows_that_arrive_after_materializing_show_as_mismatches(
    store: FeastConfig, quiet_demo: DemoData
) -> None:
    now = latest_event_time(store)
    materialize_features(store, end=now)
    stats = quiet_demo.customer_stats
    last = stats.sort_values(EVENT_TS).groupby(KEY).last()
    late = last.loc[LATE_ORDERS + LATE_RETURNS].reset_index()
    late[EVENT_TS] = pd.Timestamp(now) + pd.Timedelta(days=1)
    late.loc[late[KEY].isin(LATE_ORDERS), "orders_30d"] += 5
    late.loc[late[KEY].isin(LATE_RETURNS), "return_rate_90d"] += 0.25
    write_demo_data(DemoData(quiet_demo.orders, pd.concat([stats, late], ignore_index=True)), store.data_dir)

    served_at = now + pd.Timedelta(days=2).to_pytimedelta()
    found = _check(store, _serve(store, _customers(quiet_demo), served_at), quiet_demo)
    orders, returns, age = (found.feature(n) for n in FEATURE_NAMES)
    assert (orders.differ, orders.missing_online, orders.missing_offline) == (len(LATE_ORDERS), 0, 0)
    assert orders.examples == tuple(LATE_ORDERS)
    assert orders.max_abs_diff == pytest.approx(5.0)
    assert (returns.differ, returns.examples) == (len(LATE_RETURNS), tuple(LATE_RETURNS))
    assert returns.max_abs_diff == pytest.approx(0.25)
    assert (age.mismatches, age.skewed) == (0, False)
    assert found.skewed_features == ("orders_30d", "return_rate_90d")  # 3 and 2 of 60 rows: above 1 %
    assert all(reason.startswith("feature skew: ") for reason in found.reasons())


@pytest.mark.slow
def test_online_values_past_their_ttl_are_stale_while_training_sees_none(
    store: FeastConfig, quiet_demo: DemoData
) -> None:
    """Feast ignores the TTL on online reads: a customer who went quiet keeps its last value."""
    materialize_features(store, end=datetime(2026, 2, 10, tzinfo=UTC))  # the quiet ones are written
    now = latest_event_time(store)
    materialize_features(store, end=now)  # they have no fresh snapshot: their old value stays
    found = _check(store, _serve(store, _customers(quiet_demo), now), quiet_demo)
    for feature in found.features:
        assert (feature.missing_offline, feature.differ, feature.missing_online) == (len(QUIET), 0, 0)
        assert feature.examples == tuple(QUIET)
        assert feature.skewed  # 3 of 60 rows
    quiet_at_now = pd.DataFrame({KEY: QUIET, "order_ts": pd.Timestamp(now)})
    assert historical_features(store, quiet_at_now)[list(FEATURE_NAMES)].isna().all().all()
    served = OnlineFeatureReader(store).read(QUIET)
    assert all(values is not None and values["orders_30d"] is not None for values in served)
    newest = quiet_demo.customer_stats.groupby(KEY)[EVENT_TS].max()
    age_days = (pd.Timestamp(now) - newest.loc[QUIET]).dt.days
    assert (age_days > 30).all(), "served values older than the 30-day TTL"


# --- the monitor job and its verdict ----------------------------------------------------------------


def test_skew_joins_the_verdict_named_as_such() -> None:
    no_drift = Verdict(False, ("overall: 0 of 12 columns drifted",))
    assert with_skew(no_drift, ()) is no_drift  # no skew: the drift verdict is unchanged
    skewed = with_skew(no_drift, ("feature skew: orders_30d ...",))
    assert skewed == Verdict(True, ("feature skew: orders_30d ...",))
    drift = Verdict(True, ("overall: price drifted",))
    assert with_skew(drift, ("feature skew: a",)).reasons == ("overall: price drifted", "feature skew: a")
    undecided = Verdict(None, ("not enough data",))
    assert with_skew(undecided, ("feature skew: a",)) == Verdict(True, ("feature skew: a",))


@pytest.mark.slow
def test_the_monitor_job_reports_skew_from_a_real_store(
    tmp_path: Path,
    demo: DemoData,
    training: pd.DataFrame,
    served_records: list[dict[str, Any]],
    cascade: CascadeManifest,
) -> None:
    """The served window of the drift tests against the Feast store of the same demo data.

    The records carry the training join's values; the store answers as of each order's time.
    A stale online value is planted for two customers: exactly their rows show up.
    """
    write_demo_data(demo, tmp_path / "data")
    config = FeastConfig(tmp_path / "feast", tmp_path / "data", f"sg_skew_{uuid.uuid4().hex[:12]}")
    apply_features(config)
    stale = {int(served_records[0]["fields"][KEY]), int(served_records[1]["fields"][KEY])}
    records = [dict(r) for r in served_records]
    for record in records:
        if record["fields"][KEY] in stale:
            record["online_features"] = {**record["online_features"], "orders_30d": 999.0}
    planted = sum(r["fields"][KEY] in stale for r in records)

    result = check_drift(
        records,
        training,
        cascade,
        tmp_path / "out",
        policy=DriftPolicy(watched=WATCHED),
        skew=SkewCheck(FeastOfflineFeatures(config), SkewPolicy(max_mismatch_rate=0.001)),
    )
    skew = result.skew
    assert skew is not None
    orders = skew.feature("orders_30d")
    assert (orders.rows, orders.differ, orders.missing_online) == (2_000, planted, 0)
    assert set(orders.examples) == stale
    assert skew.skewed_features == ("orders_30d",)
    assert [f.mismatches for f in skew.features if f.feature != "orders_30d"] == [0, 0]
    assert result.summary.verdict.drift is True
    assert [r for r in result.summary.verdict.reasons if "skew" in r] == list(skew.reasons())

    summary = json.loads(result.summary_json.read_text())
    assert summary["feature_skew"]["skewed"] == ["orders_30d"]
    assert summary["feature_skew"]["features"]["orders_30d"]["differ"] == planted
    assert any(r.startswith("feature skew: orders_30d") for r in summary["verdict"]["reasons"])
    gauges = {
        (s.name, s.labels.get("feature"), s.labels.get("side")): s.value
        for family in text_string_to_metric_families(result.metrics.read_text())
        for s in family.samples
        if s.name.startswith("skewguard_feature_skew_")
    }
    assert gauges[("skewguard_feature_skew_detected", "orders_30d", None)] == 1
    assert gauges[("skewguard_feature_skew_detected", "account_age_days", None)] == 0
    assert gauges[("skewguard_feature_skew_mismatch_rate", "orders_30d", None)] == pytest.approx(
        planted / 2_000
    )
    assert gauges[("skewguard_feature_skew_missing", "orders_30d", "offline")] == 0
    page = result.html.read_text(encoding="utf-8")
    assert page.index("id='feature-skew'") < page.index("</body>")
    table = page.split("id='feature-skew'", 1)[1].split("</section>", 1)[0]
    assert [line.count(">orders_30d</td>") for line in table.split("<tr>")[2:]] == [1, 0, 0]


@pytest.mark.slow
def test_skewguard_monitor_checks_skew_unless_told_not_to(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    demo: DemoData,
    training: pd.DataFrame,
    served_records: list[dict[str, Any]],
    cascade: CascadeManifest,
) -> None:
    """The command as an operator runs it: champion, prediction log, training set and Feast in one home."""
    home = tmp_path / "home"
    monkeypatch.setenv("SKEWGUARD_HOME", str(home))
    monkeypatch.delenv("SKEWGUARD_LOG_URL", raising=False)
    name = f"skewcli{uuid.uuid4().hex[:6]}"
    promote(
        save_manifest(cascade.model_copy(update={"name": name, "metrics": {"training_set": "t.parquet"}}))
    )
    (home / "training").mkdir(parents=True)
    training.to_parquet(home / "training" / "t.parquet")
    stale = int(served_records[0]["fields"][KEY])
    log = open_log(f"sqlite:///{home / 'predictions.db'}")
    log.prepare()
    rows = []
    for record in served_records:
        online = record["online_features"]
        if record["fields"][KEY] == stale:
            online = {**online, "return_rate_90d": 0.99}
        served = PredictionRecord(**{**record, "cascade": name, "online_features": online})
        rows.append(tuple(getattr(served, column) for column in COLUMNS))
    log.write(rows)
    log.close()
    args = ["monitor", name, "--out", str(tmp_path / "out"), "--skew-threshold", "0.0001"]
    args += [f"--watch={column}" for column in sorted(WATCHED)]

    unset = CliRunner().invoke(cli, args)  # Feast was never applied in this home
    assert isinstance(unset.exception, ConfigError)
    assert "--no-skew" in unset.exception.message
    skipped = CliRunner().invoke(cli, [*args, "--no-skew"])
    assert skipped.exit_code == 0, skipped.output
    assert "drift: False" in skipped.output
    assert "feature skew" not in skipped.output

    write_demo_data(demo, home / "data")
    apply_features(FeastConfig(home / "feast", home / "data"))
    checked = CliRunner().invoke(cli, args)
    assert checked.exit_code == 1, checked.output
    assert "drift: True" in checked.output
    assert "  - feature skew: return_rate_90d" in checked.output
    assert "feature skew: return_rate_90d\n" in checked.output
    summary = json.loads((tmp_path / "out" / "drift-summary.json").read_text())
    assert summary["feature_skew"]["features"]["return_rate_90d"]["examples"] == [stale]
