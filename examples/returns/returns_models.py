"""The returns example's models: "will this item be returned?" from tabular, text and image fields.

One scikit-learn pipeline holds every transform — timestamp parts, signed logs, one-hot
categories, TF-IDF text, pooled image colours — so that packaging puts all of it inside
the ONNX graph. Trees get a float32 cast first, which makes them convert exactly.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from returns_data import DemoData
from skl2onnx.sklapi import CastTransformer
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skewguard.bentos.images import decode_image
from skewguard.bentos.transforms import DatetimeFeatures, ImageFeatures, SignedLog1p, make_text_vectorizer

Head = Literal["hgb", "lr", "rf"]
NUMERIC = ("price", "quantity")
ONLINE = ("orders_30d", "return_rate_90d", "account_age_days")
CATEGORICAL = ("category", "channel")
TEXT = "description"
TIMESTAMP = "order_ts"
IMAGE = "image"
ENTITY_KEY = "customer_id"
FEATURE_VIEW = "customer_stats"


def make_pipeline(
    head: Head = "hgb", *, numeric: tuple[str, ...] = NUMERIC + ONLINE, seed: int = 0, image: bool = True
) -> Pipeline:
    """An unfitted pipeline over the raw demo fields with the chosen classifier head.

    ``image=False`` leaves the photo out: its graph has no image input at all, so a client
    sends tabular and text fields only and the gateway neither decodes nor logs an image.
    """
    linear = head == "lr"
    # Trees read raw numbers: a cast from float64 to float32 is exact on both sides, whereas a
    # logarithm before the trees differs by an ulp between numpy and onnxruntime, and the
    # parity gate's threshold probes find exactly those rows.
    numbers: Any = (
        Pipeline([("log", SignedLog1p()), ("scale", StandardScaler())]) if linear else "passthrough"
    )
    parts: list[tuple[str, Any, Any]] = [
        ("numeric", numbers, list(numeric)),
        ("categorical", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL)),
        ("time", DatetimeFeatures(), TIMESTAMP),
        ("text", make_text_vectorizer(max_features=300, min_df=3), TEXT),
    ]
    if image:
        parts.append(("image", ImageFeatures(grid=4), IMAGE))
    columns = ColumnTransformer(parts, sparse_threshold=0.0)
    heads: dict[str, Any] = {
        "hgb": HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.08, early_stopping=True, random_state=seed
        ),
        "rf": RandomForestClassifier(n_estimators=100, min_samples_leaf=5, n_jobs=1, random_state=seed),
        "lr": LogisticRegression(C=0.5, max_iter=2000),
    }
    steps: list[tuple[str, Any]] = [("columns", columns)]
    if not linear:
        steps.append(("float32", CastTransformer(dtype=np.float32)))
    steps.append(("model", heads[head]))
    return Pipeline(steps)


def make_router() -> Pipeline:
    """The router of ``cascade.yaml`` (``is_reseller``): gradient boosting over every field."""
    return make_pipeline("hgb")


def make_specialist() -> Pipeline:
    """Each branch's model in ``cascade.yaml`` (``returned``): gradient boosting over every field."""
    return make_pipeline("hgb")


def make_linear() -> Pipeline:
    """A quick logistic regression over every field (small runs, tests)."""
    return make_pipeline("lr")


def make_text_router() -> Pipeline:
    """Like :func:`make_router`, without the photo: a tabular+text cascade."""
    return make_pipeline("hgb", image=False)


def make_text_specialist() -> Pipeline:
    """Like :func:`make_specialist`, without the photo."""
    return make_pipeline("hgb", image=False)


def training_frame(data: DemoData) -> pd.DataFrame:
    """Orders joined with each customer's stats as of the order time, images decoded."""
    orders = data.orders.sort_values("order_ts", kind="stable")
    stats = data.customer_stats.sort_values("event_timestamp", kind="stable")
    joined = pd.merge_asof(
        orders,
        stats,
        left_on="order_ts",
        right_on="event_timestamp",
        by=ENTITY_KEY,
        direction="backward",
    ).drop(columns=["event_timestamp"])
    joined[IMAGE] = [decode_image(png) for png in joined[IMAGE]]
    return joined.reset_index(drop=True)


def feature_columns(numeric: tuple[str, ...] = NUMERIC + ONLINE, *, image: bool = True) -> list[str]:
    """The raw fields the pipeline reads, in order (``image=False``: as ``make_pipeline(image=False)``)."""
    return [*numeric, *CATEGORICAL, TIMESTAMP, TEXT, *([IMAGE] if image else [])]


def split_by_time(frame: pd.DataFrame, holdout: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oldest rows for training, the most recent ``holdout`` share for evaluation."""
    ordered = frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * (1 - holdout))
    return ordered.iloc[:cut], ordered.iloc[cut:]


def train_and_package(
    data: DemoData, *, head: Head = "hgb", name: str = "returns-demo", seed: int = 0, image: bool = True
) -> str:
    """Fit the demo model on the oldest 80 % of orders, gate it on the newest, store it."""
    from skewguard.bentos.package import package_model

    train, test = split_by_time(training_frame(data))
    columns = feature_columns(image=image)
    pipeline = make_pipeline(head, seed=seed, image=image).fit(train[columns], train["returned"])
    return package_model(
        pipeline,
        test[columns],
        name=name,
        y_sample=test["returned"].to_numpy(),
        X_profile=train[columns],
        entity_key=ENTITY_KEY,
        online_features={feature: f"{FEATURE_VIEW}:{feature}" for feature in ONLINE},
        labels={"head": head, "target": "returned"},
        seed=seed,
    )
