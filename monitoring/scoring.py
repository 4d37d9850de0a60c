"""A metric of answers on labeled rows, and its bootstrap interval: the live comparison's scoring.

``Scorer`` holds one variant's answers to labeled rows and scores them — on all rows, or on
a resample of their indices — with ROC AUC (two classes), log loss, accuracy, MAE, RMSE or
R². ``bootstrap`` scores two variants on the same resamples (paired: the same rows for both)
or on resamples of their own (two samples), and gives each metric and the gain — candidate
minus champion, positive when the candidate is better — with a 95 % percentile interval.
A metric that is undefined on a resample (one class only) leaves that resample out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse"})
REGRESSION = frozenset({"mae", "rmse", "r2"})
RESAMPLES = 1_000
LEVEL = 0.95


@dataclass(frozen=True, slots=True)
class Estimate:
    """A figure on the labeled rows and its bootstrap interval (None where undefined)."""

    value: float | None
    low: float | None
    high: float | None
    rows: int


def bootstrap(
    mine: Scorer, theirs: Scorer, a_draws: Sequence[NDArray[np.intp]], b_draws: Sequence[NDArray[np.intp]]
) -> tuple[Estimate, Estimate, Estimate]:
    """Both metrics and the gain on all rows, and their percentile intervals over the resamples."""
    a_values, b_values, gains = [], [], []
    for a_idx, b_idx in zip(a_draws, b_draws, strict=True):
        a, b = mine.score(a_idx), theirs.score(b_idx)
        a_values.append(a)
        b_values.append(b)
        gains.append(_gain(mine.name, a, b))
    a_all, b_all = mine.score(), theirs.score()
    return (
        _estimate(a_all, a_values, mine.n),
        _estimate(b_all, b_values, theirs.n),
        _estimate(_gain(mine.name, a_all, b_all), gains, min(mine.n, theirs.n)),
    )


def _gain(name: str, champion: float | None, candidate: float | None) -> float | None:
    """Candidate minus champion, positive when the candidate is better."""
    if champion is None or candidate is None:
        return None
    return champion - candidate if name in LOWER_IS_BETTER else candidate - champion


def _estimate(value: float | None, samples: Sequence[float | None], rows: int) -> Estimate:
    kept = [s for s in samples if s is not None and math.isfinite(s)]
    if value is None or not kept:
        return Estimate(value, None, None, rows)
    tail = (1 - LEVEL) / 2 * 100
    low, high = (float(v) for v in np.percentile(kept, [tail, 100 - tail]))
    return Estimate(value, low, high, rows)


class Scorer:
    """One variant's answers to labeled rows, scored on all of them or on a resample."""

    def __init__(
        self,
        name: str,
        y: Sequence[Any],
        predictions: Sequence[Any],
        probabilities: Sequence[Mapping[str, float] | None],
    ) -> None:
        self.name = name
        self.n = len(y)
        if name in REGRESSION:
            self.y_num = np.array([float(v) for v in y], dtype=np.float64)
            self.p_num = np.array([float(p) for p in predictions], dtype=np.float64)
            return
        self.y = np.array([label_key(v) for v in y], dtype=object)
        self.predicted = np.array([label_key(p) for p in predictions], dtype=object)
        self.classes = sorted({k for p in probabilities for k in (p or {})})
        self.proba = np.array(
            [[float((p or {}).get(c, 0.0)) for c in self.classes] for p in probabilities], dtype=np.float64
        ).reshape(len(probabilities), len(self.classes))

    def score(self, idx: NDArray[np.intp] | None = None) -> float | None:
        if self.n == 0:
            return None
        pick = slice(None) if idx is None else idx
        if self.name in REGRESSION:
            return _regression_score(self.name, self.y_num[pick], self.p_num[pick])
        y = self.y[pick]
        if self.name == "accuracy":
            return float(np.mean(y == self.predicted[pick]))
        return _probability_score(self.name, y, self.proba[pick], self.classes)


def _regression_score(name: str, y: NDArray[np.float64], predicted: NDArray[np.float64]) -> float | None:
    if name == "mae":
        return float(np.mean(np.abs(y - predicted)))
    if name == "rmse":
        return float(math.sqrt(np.mean((y - predicted) ** 2)))
    total = float(np.sum((y - y.mean()) ** 2))
    return None if total == 0 else 1.0 - float(np.sum((y - predicted) ** 2)) / total


def _probability_score(
    name: str, y: NDArray[Any], proba: NDArray[np.float64], classes: list[str]
) -> float | None:
    from sklearn.metrics import log_loss, roc_auc_score

    present = set(y.tolist())
    if name == "roc_auc":
        if len(classes) != 2 or len(present) != 2 or not present <= set(classes):
            return None
        return float(roc_auc_score(y == classes[1], proba[:, 1]))
    if not present <= set(classes):
        return None
    return float(log_loss(y, np.clip(proba, 1e-15, 1.0), labels=classes))


def label_key(value: Any) -> str:
    """A class label as the answers' probabilities name it: ``1`` and ``1.0`` alike are ``"1"``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return str(int(value))
    return str(value)
