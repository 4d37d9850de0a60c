"""Feast definitions of the returns example: the ``customer`` entity, its weekly ``customer_stats``.

Feast reads every ``.py`` file of this folder, so only definitions live here. The
snapshots are the example's generated data (``../data/customer_stats.parquet``, written
by ``skewguard demo-data``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

STATS_TTL = timedelta(days=30)
"""A snapshot serves orders up to 30 days after it: the snapshots are weekly, so a value older
than that means the customer went quiet, and it comes back missing, not stale."""
DATA = Path(__file__).resolve().parent.parent / "data"

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A marketplace customer (orders.customer_id).",
)

customer_stats_source = FileSource(
    name="customer_stats_source",
    path=str(DATA / "customer_stats.parquet"),
    timestamp_field="event_timestamp",
    description="Weekly snapshots of each customer's order statistics.",
)

customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=STATS_TTL,
    schema=[
        Field(name="orders_30d", dtype=Int64, description="Orders in the 30 days before the snapshot."),
        Field(name="return_rate_90d", dtype=Float64, description="Share of items returned, 90 days."),
        Field(name="account_age_days", dtype=Int64, description="Days since the account was opened."),
    ],
    source=customer_stats_source,
    online=True,
)

returns_features = FeatureService(
    name="returns_features",
    features=[customer_stats],
    description="The customer features the returns cascade (router and specialists) reads.",
)
