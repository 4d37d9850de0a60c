"""The bike-hires example's models: a router for long hires, a duration regressor per branch.

Every transform is in the pipeline, so packaging puts it inside the ONNX graph: the hour
and day of week come from the raw start time (``DatetimeFeatures``), stations and riders
are one-hot encoded, numbers imputed and scaled. Clients send the raw fields; the gateway adds the
station's recent statistics from Feast.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skl2onnx.sklapi import CastTransformer
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skewguard.bentos.transforms import DatetimeFeatures

NUMERIC = ("temperature_c", "hires_7d", "mean_duration_7d", "long_share_7d")
CATEGORICAL = ("station", "rider")
START = "start_time"


def _columns(numbers: Any) -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("numeric", numbers, list(NUMERIC)),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL)),
            ("time", DatetimeFeatures(), START),
        ],
        sparse_threshold=0.0,
    )


def make_router() -> Pipeline:
    """Will this hire last longer than 30 minutes? Gradient boosting on float32 features."""
    return Pipeline(
        [
            ("columns", _columns("passthrough")),
            ("float32", CastTransformer(dtype=np.float32)),
            ("model", HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=0)),
        ]
    )


def make_duration() -> Pipeline:
    """Minutes of a hire: a ridge regression on scaled numbers, one-hot categories and time parts.

    A station's statistics are missing before its first snapshot: the training median stands in.
    """
    numbers = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    return Pipeline([("columns", _columns(numbers)), ("model", Ridge(alpha=1.0))])
