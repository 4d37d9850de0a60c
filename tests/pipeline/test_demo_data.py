"""The "marketplace returns" demo data: deterministic, typed, drifting on demand, multimodal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from returns_data import (
    CATEGORIES,
    CUSTOMER_STATS_DTYPES,
    ORDER_DTYPES,
    UNSEEN_CATEGORY,
    DemoData,
    DriftKnobs,
    generate_demo_data,
    load_demo_data,
    write_demo_data,
)
from returns_drawing import BASE_VOCABULARY
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from skewguard.bentos.images import decode_image
from skewguard.errors import ConfigError


def _small(knobs: DriftKnobs | None = None) -> DemoData:
    """3,000 orders from 300 customers, seed 1: enough for distributions, quick to make."""
    return generate_demo_data(n_orders=3_000, n_customers=300, seed=1, knobs=knobs or DriftKnobs())


@pytest.fixture(scope="module")
def full() -> DemoData:
    """The default data set (20k orders, 2k customers, seed 0), shared by the slow tests."""
    return generate_demo_data()


@pytest.fixture(scope="module")
def small() -> DemoData:
    return _small()


def _pixels(orders: pd.DataFrame) -> NDArray[np.uint8]:
    return np.stack([decode_image(png) for png in orders["image"]])


def _as_of(data: DemoData) -> pd.DataFrame:
    """Each order with the customer's stats from the latest snapshot at or before it."""
    return pd.merge_asof(
        data.orders.reset_index(),
        data.customer_stats.sort_values("event_timestamp"),
        left_on="order_ts",
        right_on="event_timestamp",
        by="customer_id",
        direction="backward",
    ).set_index("index")


def test_same_seed_gives_identical_frames_and_another_seed_does_not() -> None:
    first = generate_demo_data(n_orders=800, n_customers=80, seed=7)
    second = generate_demo_data(n_orders=800, n_customers=80, seed=7)
    other = generate_demo_data(n_orders=800, n_customers=80, seed=8)
    pd.testing.assert_frame_equal(first.orders, second.orders)
    pd.testing.assert_frame_equal(first.customer_stats, second.customer_stats)
    assert list(first.orders["image"]) == list(second.orders["image"])
    assert not first.orders["price"].equals(other.orders["price"])
    assert list(first.orders["image"]) != list(other.orders["image"])
    assert not first.customer_stats["return_rate_90d"].equals(other.customer_stats["return_rate_90d"])


def test_columns_and_dtypes_are_exactly_the_contract(small: DemoData) -> None:
    orders, stats = small.orders, small.customer_stats
    assert {c: str(t) for c, t in orders.dtypes.items()} == ORDER_DTYPES
    assert {c: str(t) for c, t in stats.dtypes.items()} == CUSTOMER_STATS_DTYPES
    assert list(orders["order_id"][:2]) == ["o0000001", "o0000002"]
    assert orders["order_id"].is_unique
    assert orders["order_ts"].is_monotonic_increasing
    assert all(isinstance(v, str) for v in orders["description"])
    assert all(isinstance(v, bytes) for v in orders["image"])
    assert set(orders["category"]) == set(CATEGORIES)
    assert set(orders["channel"]) == {"web", "app", "marketplace", "b2b_api"}
    assert set(orders["customer_id"]) <= set(stats["customer_id"])
    words = orders["description"].str.split().map(len)
    assert words.min() >= 4
    assert words.max() <= 15
    non_ascii = ~orders["description"].map(str.isascii)
    assert 0.01 <= non_ascii.mean() <= 0.035


def test_every_image_decodes_to_a_32x32_rgb_array(full: DemoData) -> None:
    pixels = _pixels(full.orders)
    assert pixels.shape == (len(full.orders), 32, 32, 3)
    assert pixels.dtype == np.uint8


def test_label_rates_are_realistic_and_differ_by_segment(full: DemoData) -> None:
    orders = full.orders
    assert 0.20 <= orders["returned"].mean() <= 0.30
    assert 0.12 <= orders["is_reseller"].mean() <= 0.18
    by_segment = orders.groupby("is_reseller")["returned"].mean()
    assert by_segment[0] - by_segment[1] > 0.05
    resellers = orders["is_reseller"] == 1
    assert orders.loc[resellers, "quantity"].mean() > 3 * orders.loc[~resellers, "quantity"].mean()
    assert orders.loc[resellers, "channel"].isin(["marketplace", "b2b_api"]).mean() > 0.5


def test_customer_stats_are_a_weekly_history_so_point_in_time_matters(full: DemoData) -> None:
    stats = full.customer_stats
    per_customer = stats.groupby("customer_id")
    assert per_customer.size().min() >= 20
    assert (per_customer["event_timestamp"].min() < full.orders["order_ts"].min()).all()
    gaps = per_customer["event_timestamp"].diff().dropna().dt.total_seconds() / 86_400
    assert 6.0 <= gaps.median() <= 8.0
    assert stats["return_rate_90d"].between(0, 1).all()
    joined = _as_of(full)
    latest = per_customer["return_rate_90d"].last().reindex(full.orders["customer_id"]).to_numpy()
    assert (joined["return_rate_90d"].to_numpy() != latest).mean() > 0.8
    retail = (full.orders["is_reseller"] == 0).to_numpy()
    returned = full.orders["returned"].to_numpy()[retail]
    as_of_corr = np.corrcoef(joined["return_rate_90d"].to_numpy()[retail], returned)[0, 1]
    latest_corr = np.corrcoef(latest[retail], returned)[0, 1]
    assert as_of_corr > latest_corr + 0.03
    reseller_orders = joined.groupby("is_reseller")["orders_30d"].mean()
    assert reseller_orders[1] > 1.5 * reseller_orders[0]


def test_write_then_load_round_trips(small: DemoData, tmp_path: Path) -> None:
    paths = write_demo_data(small, tmp_path / "demo")
    assert {p.name for p in paths.values()} == {"orders.parquet", "customer_stats.parquet"}
    loaded = load_demo_data(tmp_path / "demo")
    pd.testing.assert_frame_equal(loaded.orders, small.orders)
    pd.testing.assert_frame_equal(loaded.customer_stats, small.customer_stats)


def test_loading_from_an_empty_directory_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"orders\.parquet.*skewguard demo-data"):
        load_demo_data(tmp_path)


@pytest.mark.parametrize(
    "knobs", [{"unseen_category_share": 1.5}, {"price_inflation": 0.0}, {"image_brightness": 2.0}]
)
def test_out_of_range_knobs_are_refused(knobs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="DriftKnobs"):
        DriftKnobs(**knobs)


def _profile(orders: pd.DataFrame) -> dict[str, float]:
    """What a drift monitor would look at, one number per column."""
    words = orders["description"].str.split()
    flat = [w for row in words for w in row]
    return {
        "median_price": float(orders["price"].median()),
        "mean_quantity": float(orders["quantity"].mean()),
        "reseller_share": float(orders["is_reseller"].mean()),
        "return_rate": float(orders["returned"].mean()),
        "web_share": float((orders["channel"] == "web").mean()),
        "apparel_share": float((orders["category"] == "apparel").mean()),
        "drones_share": float((orders["category"] == UNSEEN_CATEGORY).mean()),
        "words": float(words.map(len).mean()),
        "unseen_words": sum(w not in BASE_VOCABULARY for w in flat) / len(flat),
        "night_share": float((orders["order_ts"].dt.hour < 6).mean()),
        "brightness": float(_pixels(orders).mean()),
    }


# Resellers buy differently, so more of them moves every column that gives them away
# (what the router learns from); a new category brings its own prices and nouns.
_RESELLERS = {"mean_quantity", "return_rate", "web_share", "apparel_share", "night_share", "median_price"}
_DRONES = {"apparel_share", "median_price", "unseen_words"}


@pytest.mark.parametrize(
    ("knobs", "named", "expected", "tolerance", "also_moved"),
    [
        pytest.param({"price_inflation": 1.5}, "median_price", lambda b: 1.5 * b, 0.5, set(), id="inflation"),
        pytest.param(
            {"unseen_category_share": 0.2}, "drones_share", lambda _: 0.2, 0.03, _DRONES, id="drones"
        ),
        pytest.param(
            {"reseller_share": 0.4}, "reseller_share", lambda _: 0.4, 0.03, _RESELLERS, id="resellers"
        ),
        pytest.param({"reseller_share": 0.0}, "reseller_share", lambda _: 0.0, 0.0, _RESELLERS, id="none"),
        pytest.param({"vocabulary_shift": 0.3}, "unseen_words", lambda _: 0.3, 0.02, set(), id="vocabulary"),
        pytest.param({"image_brightness": 0.15}, "brightness", lambda b: b + 33, 5, set(), id="brighter"),
        pytest.param({"image_brightness": -0.15}, "brightness", lambda b: b - 38, 3, set(), id="darker"),
    ],
)
def test_each_knob_moves_what_it_names_and_leaves_the_rest(
    small: DemoData,
    knobs: dict[str, float],
    named: str,
    expected: Callable[[float], float],
    tolerance: float,
    also_moved: set[str],
) -> None:
    base = _profile(small.orders)
    drifted = _profile(_small(DriftKnobs(**knobs)).orders)
    assert drifted[named] == pytest.approx(expected(base[named]), abs=tolerance)
    for key in base.keys() - also_moved - {named}:
        assert drifted[key] == pytest.approx(base[key], rel=0.05, abs=0.02), key


def _ablation_blocks(data: DemoData) -> tuple[dict[str, NDArray[np.float64]], NDArray[np.int64], int]:
    """Feature blocks for ``returned``, the labels, and the row where the last 25 % begins."""
    orders = data.orders
    cut = int(len(orders) * 0.75)  # orders are sorted by order_ts
    tfidf = TfidfVectorizer(min_df=5)
    train_text = tfidf.fit_transform(orders["description"][:cut]).toarray()
    test_text = tfidf.transform(orders["description"][cut:]).toarray()
    pixels = _pixels(orders).astype(np.float64)
    pooled = pixels.reshape(len(orders), 2, 16, 2, 16, 3).mean(axis=(2, 4))
    tabular = pd.concat(
        [
            orders[["price", "quantity", "is_reseller"]],
            _as_of(data)["return_rate_90d"],
            pd.get_dummies(orders[["category", "channel"]], dtype=float),
        ],
        axis=1,
    )
    blocks = {
        "tabular": tabular.to_numpy(dtype=np.float64),
        "hour": orders["order_ts"].dt.hour.to_numpy(dtype=np.float64)[:, None],
        "text": np.vstack([train_text, test_text]),
        "image": pooled.reshape(len(orders), -1),
    }
    return blocks, orders["returned"].to_numpy(), cut


def _auc(blocks: dict[str, NDArray[np.float64]], y: NDArray[np.int64], cut: int, drop: str | None) -> float:
    X = np.hstack([block for name, block in blocks.items() if name != drop])
    model = HistGradientBoostingClassifier(
        max_iter=150, learning_rate=0.1, early_stopping=False, random_state=0
    )
    model.fit(X[:cut], y[:cut])
    return float(roc_auc_score(y[cut:], model.predict_proba(X[cut:])[:, 1]))


def test_dropping_text_image_or_hour_each_measurably_lowers_the_auc(full: DemoData) -> None:
    blocks, y, cut = _ablation_blocks(full)
    with threadpool_limits(limits=1):  # steady runtime on a busy machine
        aucs = {drop: _auc(blocks, y, cut, drop) for drop in (None, "text", "image", "hour")}
    for drop in ("text", "image", "hour"):
        assert aucs[None] - aucs[drop] >= 0.01, aucs
