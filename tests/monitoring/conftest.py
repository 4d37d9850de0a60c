"""Demo data, a real (small, linear) cascade, and prediction-log records made from demo orders.

One seeded data set of 7,000 orders: the oldest 5,000 are the reference (the train slice),
the newest 2,000 the served window. The drifted window is the same slice of the same
generator with drift knobs on. Records are shaped like ``skewguard.gateway.predlog`` writes them,
with the cascade's real answers (replayed from its ONNX graphs, as the gateway computes
them) and image summaries from the gateway's own ``image_summary``.

The demo's customer statistics move with time by design (account ages grow, return rates
trend), so even the undrifted window shows ``return_rate_90d`` and ``account_age_days``
drifting; ``WATCHED`` is every monitored column but those.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from returns_data import DemoData, DriftKnobs, generate_demo_data
from returns_models import ENTITY_KEY, ONLINE, training_frame

from skewguard.bentos.manifest import CascadeManifest, compose_manifest
from skewguard.monitoring.frames import ColumnSet, Outputs, monitored_columns, reference_frame
from skewguard.monitoring.replay import replay_cascade
from skewguard.predictionlog.records import image_summary
from tests.conftest import package_cascade_models

N_ORDERS, N_REFERENCE = 7_000, 5_000
DRIFT = DriftKnobs(price_inflation=1.5, unseen_category_share=0.2, vocabulary_shift=0.5)
REQUEST_FIELDS = ("price", "quantity", "category", "channel", "description")
INPUT_COLUMNS = (*REQUEST_FIELDS, "order_ts_hour", "image_brightness", "image_contrast")
OUTPUT_COLUMNS = ("prediction", "proba_1", "route")
WATCHED = frozenset(INPUT_COLUMNS + OUTPUT_COLUMNS)


def training_set(data: DemoData) -> pd.DataFrame:
    """The point-in-time training set as the pipeline writes it: images still PNG bytes."""
    frame = training_frame(data)
    frame["image"] = data.orders.sort_values("order_ts", kind="stable")["image"].to_numpy()
    return frame


def log_records(rows: pd.DataFrame, outputs: Outputs, cascade: str = "monitor") -> list[dict[str, Any]]:
    """Prediction-log records for ``rows`` answered with ``outputs``."""
    records = []
    for i, row in enumerate(rows.itertuples(index=False)):
        order = row._asdict()
        fields = {name: order[name] for name in REQUEST_FIELDS}
        fields |= {ENTITY_KEY: int(order[ENTITY_KEY]), "order_ts": order["order_ts"].isoformat()}
        fields["image"] = image_summary(order["image"])
        records.append(
            {
                "request_id": f"r{i}",
                "row": 0,
                "ts": order["order_ts"].timestamp(),
                "cascade": cascade,
                "fields": fields,
                "online_features": {name: order[name] for name in ONLINE},
                "defaults_used": False,
                "prediction": outputs.prediction[i],
                "probabilities": dict(outputs.probabilities[i]),
                "route": outputs.route[i],
                "versions": {},
                "flags": [],
            }
        )
    return records


@pytest.fixture(scope="session")
def demo() -> DemoData:
    return generate_demo_data(n_orders=N_ORDERS, n_customers=700, seed=0)


@pytest.fixture(scope="session")
def training(demo: DemoData) -> pd.DataFrame:
    return training_set(demo)


@pytest.fixture(scope="session")
def drifted_training() -> pd.DataFrame:
    return training_set(generate_demo_data(n_orders=N_ORDERS, n_customers=700, seed=0, knobs=DRIFT))


@pytest.fixture(scope="session")
def cascade() -> CascadeManifest:
    """Router and specialists (linear heads) fitted on other, smaller demo data: ~3 s, not 17."""
    demo = generate_demo_data(n_orders=2_000, n_customers=200, seed=5)
    tags = package_cascade_models(demo, "monitor", n_sample=80)
    return compose_manifest(
        "monitor",
        router_tag=tags["router"],
        threshold=0.5,
        branches={"reseller": tags["reseller"], "retail": tags["retail"]},
    )


@pytest.fixture(scope="session")
def reference_orders(training: pd.DataFrame) -> pd.DataFrame:
    return training.iloc[:N_REFERENCE].reset_index(drop=True)


@pytest.fixture(scope="session")
def served_records(training: pd.DataFrame, cascade: CascadeManifest) -> list[dict[str, Any]]:
    """The newest 2,000 orders as served by the cascade, without drift."""
    rows = training.iloc[N_REFERENCE:].reset_index(drop=True)
    return log_records(rows, replay_cascade(cascade, rows))


@pytest.fixture(scope="session")
def drifted_records(drifted_training: pd.DataFrame, cascade: CascadeManifest) -> list[dict[str, Any]]:
    """The same window with prices ×1.5, a fifth of orders in an unseen category, new words."""
    rows = drifted_training.iloc[N_REFERENCE:].reset_index(drop=True)
    return log_records(rows, replay_cascade(cascade, rows))


@pytest.fixture(scope="session")
def columns(cascade: CascadeManifest) -> ColumnSet:
    return monitored_columns(cascade.spec())


@pytest.fixture(scope="session")
def reference(reference_orders: pd.DataFrame, cascade: CascadeManifest, columns: ColumnSet) -> pd.DataFrame:
    """The reference frame, with the cascade's own answers on the reference rows."""
    return reference_frame(reference_orders, columns, replay_cascade(cascade, reference_orders))
