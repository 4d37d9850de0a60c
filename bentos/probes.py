"""Adversarial probe rows for the parity gate: where a converted graph is likeliest to differ.

Each probe is a held-out row with one field replaced: numbers exactly at and one float
step around every tree split threshold (found by bisection through the pipeline's own
transforms, so scaled or logged inputs are covered too), the training range and far beyond,
hour and day boundaries of timestamps, unseen categories, empty, non-ASCII and huge text,
missing values, and extreme images (all black, all white, noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from skewguard.bentos.images import IMAGE_VALUES
from skewguard.bentos.inputs import Batch
from skewguard.bentos.spec import FieldSpec

BISECTION_STEPS = 64
MAX_THRESHOLDS = 48
N_BASE_ROWS = 3
ODD_STRINGS = (
    "",
    "   ",
    "__skewguard_unseen__",
    "Ünïcödé façade naïve café",
    "日本語のテキスト 🚀🔥",
    "\u212a\u212a kelvin \u0130stanbul \u00df",
    "MiXeD CaSe WORDS",
    "!!! ??? ... 12345 ___",
)


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe row: which base row, which field, the value, and why."""

    base: int
    field: str
    value: Any
    kind: str


def generate_probes(pipeline: Any, heldout: Batch, *, seed: int = 0) -> tuple[Batch, list[Probe]]:
    """Probe rows derived from the first rows of ``heldout``, and what each one probes."""
    rng = np.random.default_rng(seed)
    probes: list[Probe] = []
    for spec in heldout.spec:
        column = heldout.columns[spec.name]
        values = list(_VALUES[spec.kind](spec, column, rng))
        if spec.kind == "numeric":
            values += [(v, "tree threshold") for v in threshold_values(pipeline, heldout, spec.name)]
        if spec.nullable and spec.kind != "image":
            values.append((None, "missing value"))
        probes += [
            Probe(base, spec.name, value, kind) for base in range(_n_bases(heldout)) for value, kind in values
        ]
    return _apply(heldout, probes), probes


def _n_bases(heldout: Batch) -> int:
    return min(N_BASE_ROWS, len(heldout))


def _apply(heldout: Batch, probes: list[Probe]) -> Batch:
    index = np.array([p.base for p in probes], dtype=np.intp)
    batch = heldout.take(index)
    columns = {k: v.copy() for k, v in batch.columns.items()}
    for row, probe in enumerate(probes):
        column = columns[probe.field]
        if column.dtype == object:
            column[row, 0] = "" if probe.value is None else probe.value
        elif column.shape[1] == IMAGE_VALUES:
            column[row] = probe.value
        else:
            column[row, 0] = math.nan if probe.value is None else probe.value
    return Batch(heldout.spec, columns)


def _numeric(spec: FieldSpec, column: NDArray[Any], rng: np.random.Generator) -> Iterator[tuple[Any, str]]:
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        return
    low, high = float(finite.min()), float(finite.max())
    span = max(high - low, 1.0)
    yield low, "training min"
    yield high, "training max"
    yield float(np.nextafter(low, -np.inf)), "just below training min"
    yield float(np.nextafter(high, np.inf)), "just above training max"
    yield low - span, "below training range"
    yield high + span, "above training range"
    yield 0.0, "zero"
    yield -1e9, "huge negative"
    yield 1e12, "huge positive"


def _datetime(spec: FieldSpec, column: NDArray[Any], rng: np.random.Generator) -> Iterator[tuple[Any, str]]:
    finite = column[np.isfinite(column)]
    start = float(finite.min()) if finite.size else 1.7e9
    for hour in rng.choice(24, size=4, replace=False):
        boundary = (start // 86400) * 86400 + int(hour) * 3600
        for delta in (0.0, -1.0, 1.0, -1e-3, 1e-3):
            yield boundary + delta, f"hour boundary {delta:+g}s"
    midnight = (start // 86400 + 1) * 86400
    yield midnight, "midnight"
    yield float(np.nextafter(midnight, -np.inf)), "just before midnight"
    yield 0.0, "epoch"
    yield 4.1e9, "far future"


def _string(spec: FieldSpec, column: NDArray[Any], rng: np.random.Generator) -> Iterator[tuple[Any, str]]:
    for text in ODD_STRINGS:
        yield text, "odd string"
    for category in spec.categories[:20]:
        yield category.upper(), "upper-cased category"
    if spec.kind == "text":
        words = " ".join(str(v) for v in column[:20, 0])
        yield (words + " ") * 40, "long text"


def _image(spec: FieldSpec, column: NDArray[Any], rng: np.random.Generator) -> Iterator[tuple[Any, str]]:
    yield np.zeros(IMAGE_VALUES, dtype=np.float32), "all black image"
    yield np.full(IMAGE_VALUES, 255, dtype=np.float32), "all white image"
    yield rng.integers(0, 256, IMAGE_VALUES).astype(np.float32), "noise image"
    yield np.repeat(np.array([255, 0, 0], dtype=np.float32), IMAGE_VALUES // 3), "pure red image"


_VALUES: dict[str, Callable[[FieldSpec, NDArray[Any], np.random.Generator], Iterator[tuple[Any, str]]]] = {
    "numeric": _numeric,
    "datetime": _datetime,
    "categorical": _string,
    "text": _string,
    "image": _image,
}


def threshold_values(pipeline: Any, heldout: Batch, field: str) -> list[float]:
    """Raw values of ``field`` that put a transformed feature at a split threshold, ± one step."""
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) < 2:
        return []
    head = steps[-1][1]
    thresholds = split_thresholds(head)
    if not thresholds:
        return []
    transform = pipeline[:-1].transform
    base = heldout.take(np.zeros(2, dtype=np.intp))
    column = heldout.columns[field]
    finite = column[np.isfinite(column)]
    if finite.size < 2:
        return []
    low, high = float(finite.min()), float(finite.max())
    span = max(high - low, 1.0)
    low, high = low - span, high + span
    probe = _with_value(base, field, np.array([low, high]))
    ends = np.asarray(transform(probe.to_frame()), dtype=np.float64)
    values: list[float] = []
    for feature in np.flatnonzero(ends[0] != ends[1]):
        wanted = thresholds.get(int(feature), np.empty(0))
        inside = wanted[(wanted > ends[:, feature].min()) & (wanted < ends[:, feature].max())]
        if inside.size:
            rising = bool(ends[0, feature] < ends[1, feature])
            values += _bisect(
                transform, base, field, int(feature), inside[:MAX_THRESHOLDS], (low, high), rising
            )
    return values


def _with_value(base: Batch, field: str, values: NDArray[np.float64]) -> Batch:
    batch = base.take(np.zeros(len(values), dtype=np.intp))
    columns = dict(batch.columns)
    columns[field] = values.reshape(-1, 1).astype(np.float64)
    return Batch(base.spec, columns)


def _bisect(
    transform: Callable[[Any], Any],
    base: Batch,
    field: str,
    feature: int,
    thresholds: NDArray[np.float64],
    bounds: tuple[float, float],
    rising: bool,
) -> list[float]:
    lo = np.full(thresholds.size, bounds[0])
    hi = np.full(thresholds.size, bounds[1])
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        above = _feature(transform, base, field, feature, mid) > thresholds
        go_low = above if rising else ~above
        hi = np.where(go_low, mid, hi)
        lo = np.where(go_low, lo, mid)
    found: list[float] = []
    for x in np.concatenate([lo, hi]):
        x32 = float(np.float32(x))
        found += [float(x), float(np.nextafter(x, -np.inf)), float(np.nextafter(x, np.inf)), x32]
        found += [float(np.nextafter(np.float32(x32), np.float32(s))) for s in (-np.inf, np.inf)]
    return found


def _feature(
    transform: Callable[[Any], Any], base: Batch, field: str, feature: int, values: NDArray[np.float64]
) -> NDArray[np.float64]:
    out = transform(_with_value(base, field, values).to_frame())
    dense = out.toarray() if hasattr(out, "toarray") else np.asarray(out)
    return np.asarray(dense[:, feature], dtype=np.float64)


def split_thresholds(head: Any) -> dict[int, NDArray[np.float64]]:
    """Every split threshold of a tree model, per input feature index (empty for others)."""
    pairs: list[tuple[NDArray[np.int64], NDArray[np.float64]]] = []
    for predictors in getattr(head, "_predictors", []):
        for predictor in predictors:
            split = predictor.nodes["is_leaf"] == 0
            pairs.append((predictor.nodes["feature_idx"][split], predictor.nodes["num_threshold"][split]))
    members = np.ravel(np.asarray(getattr(head, "estimators_", []), dtype=object))
    for tree in [getattr(head, "tree_", None)] + [getattr(m, "tree_", None) for m in members]:
        if tree is not None:
            split = tree.children_left != -1
            pairs.append((tree.feature[split], tree.threshold[split]))
    by_feature: dict[int, list[float]] = {}
    for features, values in pairs:
        for f, v in zip(features.tolist(), values.tolist(), strict=True):
            by_feature.setdefault(int(f), []).append(float(v))
    return {f: _spread(np.unique(np.asarray(v, dtype=np.float64))) for f, v in by_feature.items()}


def _spread(values: NDArray[np.float64]) -> NDArray[np.float64]:
    if values.size <= MAX_THRESHOLDS:
        return values
    picked: NDArray[np.float64] = values[np.linspace(0, values.size - 1, MAX_THRESHOLDS).astype(int)]
    return picked
