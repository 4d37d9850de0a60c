"""Feast definitions: the ``customer`` entity, its weekly ``customer_stats``, the cascade's service.

``feast apply`` imports every ``.py`` file in this folder, so only definitions live here.
The module-level objects (read by ``feast -c feature_repo apply``) take the data from
``$SKEWGUARD_HOME/data`` (default and relative homes: from the project root);
``skewguard.pipeline.features`` calls :func:`build_definitions` with the settings' data folder.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

STATS_TTL = timedelta(days=30)
"""A snapshot serves orders up to 30 days after it: the demo's snapshots are weekly, so a
value older than that means the customer went quiet, and it comes back missing, not stale."""

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A marketplace customer (orders.customer_id).",
)


def build_definitions(data_dir: Path) -> list[Entity | FileSource | FeatureView | FeatureService]:
    """Every Feast object of the repository, reading ``customer_stats.parquet`` in ``data_dir``."""
    source = FileSource(
        name="customer_stats_source",
        path=str(data_dir.resolve() / "customer_stats.parquet"),
        timestamp_field="event_timestamp",
        description="Weekly snapshots of each customer's order statistics.",
    )
    stats = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=STATS_TTL,
        schema=[
            Field(name="orders_30d", dtype=Int64, description="Orders in the 30 days before the snapshot."),
            Field(name="return_rate_90d", dtype=Float64, description="Share of items returned, 90 days."),
            Field(name="account_age_days", dtype=Int64, description="Days since the account was opened."),
        ],
        source=source,
        online=True,
    )
    service = FeatureService(
        name="returns_cascade",
        features=[stats],
        description="The customer features the returns cascade (router and specialists) reads.",
    )
    return [customer, source, stats, service]


def default_data_dir() -> Path:
    """``$SKEWGUARD_HOME/data``, default ``.skewguard/data``; a relative home is taken from the
    project root, as ``feast -c feature_repo`` runs from this folder."""
    project_root = Path(__file__).resolve().parent.parent
    return project_root / (os.environ.get("SKEWGUARD_HOME") or ".skewguard") / "data"


_, customer_stats_source, customer_stats, returns_cascade = build_definitions(default_data_dir())
