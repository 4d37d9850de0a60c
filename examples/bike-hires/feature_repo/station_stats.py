"""Feast definitions of the bike-hires example: the ``station`` entity and its daily ``station_stats``.

Feast reads every ``.py`` file of this folder, so only definitions live here. The snapshots
are the example's generated data (``../data/station_stats.parquet``, written by
``skewguard demo-data --example bike-hires``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

DATA = Path(__file__).resolve().parent.parent / "data"

station = Entity(
    name="station",
    join_keys=["station_id"],
    value_type=ValueType.INT64,
    description="A docking station (hires.station_id).",
)

station_stats_source = FileSource(
    name="station_stats_source",
    path=str(DATA / "station_stats.parquet"),
    timestamp_field="event_timestamp",
    description="A daily snapshot of each station's hires in the 7 days before.",
)

station_stats = FeatureView(
    name="station_stats",
    entities=[station],
    ttl=timedelta(days=3),
    schema=[
        Field(name="hires_7d", dtype=Int64, description="Hires started at the station in 7 days."),
        Field(name="mean_duration_7d", dtype=Float64, description="Their mean duration, minutes."),
        Field(name="long_share_7d", dtype=Float64, description="The share of them over 30 minutes."),
    ],
    source=station_stats_source,
    online=True,
)

hire_features = FeatureService(
    name="hire_features",
    features=[station_stats],
    description="The station features the bike-hires cascade reads.",
)
