"""The seeded "marketplace returns" demo data set: will this item be returned?

The Cascade example from "Machine Learning Design Patterns": a router spots resellers
(``is_reseller``), and specialists predict ``returned`` — by different rules for resellers
(quantity, price, category) and retail buyers (price, category, hour of day, description
words, the photo, and the customer's ``return_rate_90d`` *as of the order time*). Every
modality and the timestamp matter, the labels are noisy, and drift knobs move one
thing each. ``customer_stats`` is a weekly history per customer, so a point-in-time join
gives other values than the latest snapshot. One seed, one generator, same bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from returns_drawing import Listings, draw_listings, shift_vocabulary

from skewguard.errors import ConfigError

CATEGORIES = ("electronics", "apparel", "home", "beauty", "toys", "sports")
UNSEEN_CATEGORY = "drones"
CHANNELS = ("web", "app", "marketplace", "b2b_api")
BASE_RESELLER_SHARE = 0.15
"""Share of orders placed by resellers; they order ~2.5× as often, so ~7 % of customers."""
ORDER_DTYPES = {
    "order_id": "object",
    "customer_id": "int64",
    "order_ts": "datetime64[ns, UTC]",
    "price": "float64",
    "quantity": "int64",
    "category": "object",
    "channel": "object",
    "description": "object",
    "image": "object",
    "is_reseller": "int64",
    "returned": "int64",
}
CUSTOMER_STATS_DTYPES = {
    "customer_id": "int64",
    "event_timestamp": "datetime64[ns, UTC]",
    "orders_30d": "int64",
    "return_rate_90d": "float64",
    "account_age_days": "int64",
}
FILES = {"orders": "orders.parquet", "customer_stats": "customer_stats.parquet"}

_DAY, _WEEK = 86_400, 7 * 86_400
_WARMUP_DAYS = 40  # orders before the start, so the first snapshots count real orders
_CUSTOMER_ID_BASE = 100_000
_RESELLER_ACTIVITY = 2.5
_ALL_CATEGORIES = (*CATEGORIES, UNSEEN_CATEGORY)
_MEDIAN_PRICE = np.array([180.0, 35.0, 55.0, 22.0, 28.0, 45.0, 420.0])
_CATEGORY_P = np.array([[0.15, 0.30, 0.18, 0.15, 0.10, 0.12], [0.35, 0.10, 0.10, 0.05, 0.25, 0.15]])
_CHANNEL_P = np.array([[0.50, 0.40, 0.08, 0.02], [0.25, 0.10, 0.35, 0.30]])
_RETAIL_HOURS = [2.5, 2, 1.6, 1.3, 1.3, 1.6, 1.5, 2.5, 3.5, 4, 4.5, 5, 5.5, 5, 4.5, 4.5, 5, 5.5]
_HOUR_P = np.array([[*_RETAIL_HOURS, 6, 6.5, 7, 7, 6, 4], [3] * 9 + [6] * 9 + [3] * 6])
# Return effect of each latent attribute: fragile, oversized, slim fit, final sale, refurbished.
_ATTRIBUTE_EFFECT = np.array([1.3, 1.1, 1.3, -1.6, -1.3])
_RETAIL_CATEGORY_EFFECT = np.array([0.1, 0.8, 0.0, -0.5, -0.2, 0.2, 0.6])
_RESELLER_CATEGORY_EFFECT = np.array([0.6, -0.3, 0.0, -0.4, 0.4, 0.0, 0.8])


@dataclass(frozen=True, slots=True)
class DriftKnobs:
    """How a generated batch departs from the training distribution; defaults = none."""

    price_inflation: float = 1.0  # multiplies prices
    unseen_category_share: float = 0.0  # share of orders in a category training never saw: "drones"
    reseller_share: float | None = None  # share of orders by resellers; None = BASE_RESELLER_SHARE
    vocabulary_shift: float = 0.0  # share of description words swapped for never-seen words
    image_brightness: float = 0.0  # added to every pixel, as a fraction of 255, in [-1, 1]

    def __post_init__(self) -> None:
        ranges = {"price_inflation": (1e-9, np.inf), "image_brightness": (-1.0, 1.0)}
        for name in ("unseen_category_share", "reseller_share", "vocabulary_shift", *ranges):
            value, (low, high) = getattr(self, name), ranges.get(name, (0.0, 1.0))
            if value is not None and not low <= value <= high:
                raise ConfigError(f"DriftKnobs.{name} is {value}; expected a value in [{low}, {high}].")


@dataclass(frozen=True, slots=True)
class DemoData:
    """The two tables: one row per order, and the customers' weekly feature history."""

    orders: pd.DataFrame
    customer_stats: pd.DataFrame


@dataclass(frozen=True, slots=True)
class _Customers:
    is_reseller: NDArray[np.bool_]
    activity: NDArray[np.float64]
    age_at_start_s: NDArray[np.int64]
    propensity: NDArray[np.float64]  # logit of the return rate at the start
    trend: NDArray[np.float64]  # change of that logit over the period


def generate_demo_data(
    *,
    n_orders: int = 20_000,
    n_customers: int = 2_000,
    seed: int = 0,
    start: str = "2026-01-01",
    days: int = 180,
    knobs: DriftKnobs = DriftKnobs(),
) -> DemoData:
    """Generate orders and customer stats; the same arguments give identical frames."""
    if n_orders < 1 or n_customers < 2 or days < 1:
        raise ConfigError(
            f"generate_demo_data got n_orders={n_orders}, n_customers={n_customers}, "
            f"days={days}; expected n_orders >= 1, n_customers >= 2 and days >= 1."
        )
    try:
        start_s = int(pd.Timestamp(start, tz="UTC").timestamp())
    except ValueError as exc:
        raise ConfigError(
            f"generate_demo_data got start={start!r}; expected a date like 2026-01-01."
        ) from exc
    share = BASE_RESELLER_SHARE if knobs.reseller_share is None else knobs.reseller_share
    rng = np.random.default_rng(seed)
    customers = _draw_customers(rng, n_customers, share)
    n_warmup, warmup_s = round(n_orders * _WARMUP_DAYS / days), start_s - _WARMUP_DAYS * _DAY
    warm_cust, warm_s = _draw_orders(rng, customers, n_warmup, warmup_s, _WARMUP_DAYS, share)
    cust, order_s = _draw_orders(rng, customers, n_orders, start_s, days, share)
    reseller = customers.is_reseller[cust]
    stats = _draw_customer_stats(rng, customers, start_s, days)
    history_cust, history_s = np.concatenate([warm_cust, cust]), np.concatenate([warm_s, order_s])
    stats["orders_30d"] = _count_orders_30d(stats, history_cust, history_s)
    items = _draw_items(rng, reseller, knobs)
    rr90 = stats["return_rate_90d"].to_numpy()[_as_of(stats, cust, order_s)]
    orders = items.frame
    orders["returned"] = _draw_returns(rng, items, reseller, order_s, rr90)
    if knobs.vocabulary_shift > 0:  # drawn last, so the other columns stay identical
        orders["description"] = shift_vocabulary(rng, list(orders["description"]), knobs.vocabulary_shift)
    orders.insert(0, "order_id", [f"o{i:07d}" for i in range(1, n_orders + 1)])
    orders.insert(1, "customer_id", cust + _CUSTOMER_ID_BASE)
    orders.insert(2, "order_ts", pd.to_datetime(order_s, unit="s", utc=True))
    orders["is_reseller"] = reseller.astype(np.int64)
    stats["customer_id"] += _CUSTOMER_ID_BASE
    stats["event_timestamp"] = pd.to_datetime(stats["event_timestamp"], unit="s", utc=True)
    return DemoData(
        orders=orders[list(ORDER_DTYPES)].astype(ORDER_DTYPES),
        customer_stats=stats[list(CUSTOMER_STATS_DTYPES)].astype(CUSTOMER_STATS_DTYPES),
    )


def _draw_customers(rng: np.random.Generator, n: int, share: float) -> _Customers:
    """Customer traits; the reseller head count makes ``share`` of orders theirs."""
    wanted = round(n * share / (share + _RESELLER_ACTIVITY * (1.0 - share)))
    n_resellers = 0 if share == 0.0 else n if share == 1.0 else min(max(wanted, 1), n - 1)
    is_reseller = np.zeros(n, dtype=bool)
    is_reseller[rng.permutation(n)[:n_resellers]] = True
    return _Customers(
        is_reseller=is_reseller,
        activity=rng.lognormal(0.0, 0.6, n),
        age_at_start_s=(_WARMUP_DAYS * _DAY + rng.exponential(600.0 * _DAY, n)).astype(np.int64),
        propensity=rng.normal(-1.3, 0.7, n) - 0.5 * is_reseller,
        trend=rng.normal(0.0, 1.0, n),
    )


def _pick(
    rng: np.random.Generator, probs: NDArray[np.float64], group: NDArray[np.bool_]
) -> NDArray[np.int64]:
    """Draw one code per row from ``probs[0]`` (retail) or ``probs[1]`` (reseller)."""
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(len(group))
    codes = np.where(group, np.searchsorted(cdf[1], u, "right"), np.searchsorted(cdf[0], u, "right"))
    return np.asarray(np.minimum(codes, probs.shape[1] - 1), dtype=np.int64)


def _draw_orders(
    rng: np.random.Generator, customers: _Customers, n: int, start_s: int, days: int, share: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Who ordered when, sorted by time: (customer index, epoch seconds)."""
    group = rng.random(n) < share
    cust = np.zeros(n, dtype=np.int64)
    for flag in (False, True):
        pool, rows = np.flatnonzero(customers.is_reseller == flag), np.flatnonzero(group == flag)
        if len(rows) and len(pool):
            cdf = np.cumsum(customers.activity[pool])
            picked = np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1], "right")
            cust[rows] = pool[np.minimum(picked, len(pool) - 1)]
    hour = _pick(rng, _HOUR_P, group)
    seconds = start_s + rng.integers(0, days, n) * _DAY + hour * 3600 + rng.integers(0, 3600, n)
    order = np.argsort(seconds, kind="stable")
    return cust[order], seconds[order]


def _key(cust: NDArray[np.int64], seconds: NDArray[np.int64]) -> NDArray[np.int64]:
    """One sortable int64 per (customer, time), for searchsorted joins."""
    return cust * (1 << 34) + seconds + (1 << 33)


def _draw_customer_stats(
    rng: np.random.Generator, customers: _Customers, start_s: int, days: int
) -> pd.DataFrame:
    """Weekly snapshots per customer from just before the start; return rates drift."""
    n, k = len(customers.activity), days // 7 + 2
    offset = rng.uniform(0.5, 7.0, (n, 1)) * _DAY
    jitter = rng.uniform(-0.25, 0.25, (n, k)) * _DAY
    ts = np.rint(start_s - offset + _WEEK * np.arange(k) + jitter).astype(np.int64)
    walk = np.cumsum(rng.normal(0.0, 0.2, (n, k)), axis=1)
    z = customers.propensity[:, None] + customers.trend[:, None] * (ts - start_s) / (days * _DAY)
    noise = rng.normal(0.0, 0.02, (n, k))
    rate = np.clip(1.0 / (1.0 + np.exp(-(z + walk))) + noise, 0.0, 1.0).round(3)
    age = (ts - start_s + customers.age_at_start_s[:, None]) // _DAY
    keep = ts < start_s + days * _DAY
    return pd.DataFrame(
        {
            "customer_id": np.broadcast_to(np.arange(n)[:, None], (n, k))[keep],
            "event_timestamp": ts[keep],
            "return_rate_90d": rate[keep],
            "account_age_days": age[keep],
        }
    )


def _count_orders_30d(
    stats: pd.DataFrame, cust: NDArray[np.int64], seconds: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Orders each customer placed in the 30 days up to each snapshot."""
    orders = np.sort(_key(cust, seconds))
    snap_cust = stats["customer_id"].to_numpy()
    snap_s = stats["event_timestamp"].to_numpy()
    upto = np.searchsorted(orders, _key(snap_cust, snap_s), "right")
    since = np.searchsorted(orders, _key(snap_cust, snap_s - 30 * _DAY), "right")
    return (upto - since).astype(np.int64)


def _as_of(stats: pd.DataFrame, cust: NDArray[np.int64], seconds: NDArray[np.int64]) -> NDArray[np.int64]:
    """Row of the latest snapshot at or before each order (the first precedes the start)."""
    snaps = _key(stats["customer_id"].to_numpy(), stats["event_timestamp"].to_numpy())
    return (np.searchsorted(snaps, _key(cust, seconds), "right") - 1).astype(np.int64)


@dataclass(frozen=True, slots=True)
class _Items:
    frame: pd.DataFrame
    category: NDArray[np.int64]
    rel_price: NDArray[np.float64]  # log of price / category median, before inflation
    listings: Listings


def _draw_items(rng: np.random.Generator, reseller: NDArray[np.bool_], knobs: DriftKnobs) -> _Items:
    """What was bought, how, and how the listing describes and shows it."""
    n = len(reseller)
    category = _pick(rng, _CATEGORY_P, reseller)
    category[rng.random(n) < knobs.unseen_category_share] = len(CATEGORIES)
    channel = _pick(rng, _CHANNEL_P, reseller)
    rel_price = rng.normal(0.0, 0.55, n) + np.log(0.85) * reseller
    price = np.round(_MEDIAN_PRICE[category] * np.exp(rel_price) * knobs.price_inflation, 2)
    bulk = rng.poisson(rng.lognormal(1.2, 0.6, n))
    quantity = 1 + np.where(reseller, bulk, rng.poisson(0.25, n))
    names = [_ALL_CATEGORIES[c] for c in category]
    listings = draw_listings(rng, names, knobs.image_brightness)
    frame = pd.DataFrame(
        {
            "price": price,
            "quantity": quantity,
            "category": names,
            "channel": [CHANNELS[c] for c in channel],
            "description": listings.descriptions,
            "image": listings.images,
        }
    )
    return _Items(frame, category, rel_price, listings)


def _draw_returns(
    rng: np.random.Generator,
    items: _Items,
    reseller: NDArray[np.bool_],
    seconds: NDArray[np.int64],
    rate_90d: NDArray[np.float64],
) -> NDArray[np.int64]:
    """Logistic ground truth with noise, by different rules for resellers and retail."""
    night = (seconds // 3600) % 24 < 6  # late-night impulse orders (UTC)
    listing = items.listings
    retail = (
        -2.3
        + 0.55 * items.rel_price
        + _RETAIL_CATEGORY_EFFECT[items.category]
        + 2.0 * night
        + listing.attributes @ _ATTRIBUTE_EFFECT
        + 1.5 * listing.defect
        + 1.3 * listing.dark_photo
        + 4.0 * (rate_90d - 0.25)
    )
    quantity = items.frame["quantity"].to_numpy()
    bulk = -1.9 + 0.25 * (quantity - 5) + 0.5 * items.rel_price + 0.3 * listing.defect
    logit: NDArray[np.float64] = np.where(reseller, bulk + _RESELLER_CATEGORY_EFFECT[items.category], retail)
    logit += rng.normal(0.0, 0.4, len(logit))
    return (rng.random(len(logit)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)


def write_demo_data(data: DemoData, directory: Path) -> dict[str, Path]:
    """Write ``orders.parquet`` and ``customer_stats.parquet``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / file for name, file in FILES.items()}
    data.orders.to_parquet(paths["orders"], index=False)
    data.customer_stats.to_parquet(paths["customer_stats"], index=False)
    return paths


def load_demo_data(directory: Path) -> DemoData:
    """Read the files ``write_demo_data`` wrote, with their columns and dtypes checked."""
    orders = _read_table(directory / FILES["orders"], ORDER_DTYPES)
    stats = _read_table(directory / FILES["customer_stats"], CUSTOMER_STATS_DTYPES)
    return DemoData(orders=orders, customer_stats=stats)


def _read_table(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(f"Demo data file {path} is missing; run `skewguard demo-data` to generate it.")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Demo data file {path} is not readable Parquet ({exc}); "
            "run `skewguard demo-data` to regenerate it."
        ) from exc
    missing = [column for column in dtypes if column not in frame.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ConfigError(
            f"Demo data file {path} lacks the columns {shown}; run `skewguard demo-data` to regenerate it."
        )
    return frame[list(dtypes)].astype(dtypes)


def request_row(order: Mapping[str, Any]) -> dict[str, Any]:
    """One demo order as a client sends it: the entity key and raw fields, the image base64."""
    return {
        "customer_id": int(order["customer_id"]),
        "price": float(order["price"]),
        "quantity": int(order["quantity"]),
        "category": str(order["category"]),
        "channel": str(order["channel"]),
        "order_ts": pd.Timestamp(order["order_ts"]).isoformat(),
        "description": str(order["description"]),
        "image": base64.b64encode(order["image"]).decode("ascii"),
    }


def write_example_data(folder: Path, *, rows: int = 20_000, seed: int = 0) -> dict[str, Path]:
    """The example's data files in ``folder`` (what ``skewguard demo-data`` calls)."""
    demo = generate_demo_data(n_orders=rows, n_customers=max(rows // 10, 50), seed=seed)
    return write_demo_data(demo, folder)


def example_request(folder: Path) -> dict[str, Any]:
    """A real request body from the written data: its newest order."""
    orders = pd.read_parquet(folder / FILES["orders"])
    return {"rows": [request_row(orders.sort_values("order_ts").iloc[-1])]}
