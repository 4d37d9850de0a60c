"""The L-infinity distance between two categorical distributions: TFDV's training–serving skew measure.

``max over categories c of |p_current(c) − p_reference(c)|``, where a category seen on one
side only has probability 0 on the other. It lies in [0, 1] and reads directly: 0.2 means
some category's share moved by 20 percentage points — for instance a category the
training data never had now makes a fifth of the traffic. TensorFlow Data Validation and
Vertex AI Model Monitoring flag a categorical feature when it exceeds a threshold (0.1 is a
common choice); unlike a chi-square p-value it does not shrink towards "drift" as the
sample grows. Missing values (None, NaN) are left out of both sides.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping

from skewguard.errors import ConfigError


def category_shares(values: Iterable[Hashable]) -> dict[Hashable, float]:
    """Each category's share of the non-missing values."""
    counts = Counter(v for v in values if not _is_missing(v))
    total = sum(counts.values())
    return {category: count / total for category, count in counts.items()} if total else {}


def linf_distance(reference: Iterable[Hashable], current: Iterable[Hashable]) -> float:
    """``max_c |p_current(c) − p_reference(c)|`` over the categories of both sides."""
    return linf_from_shares(category_shares(reference), category_shares(current))


def linf_from_shares(p_ref: Mapping[Hashable, float], p_cur: Mapping[Hashable, float]) -> float:
    """The same distance from each side's shares (e.g. pandas' ``value_counts(normalize=True)``)."""
    if not p_ref or not p_cur:
        side = "reference" if not p_ref else "current"
        raise ConfigError(
            f"The L-infinity distance needs at least one non-missing value; the {side} has none."
        )
    return max(abs(p_cur.get(c, 0.0) - p_ref.get(c, 0.0)) for c in p_ref.keys() | p_cur.keys())


def _is_missing(value: Hashable) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
