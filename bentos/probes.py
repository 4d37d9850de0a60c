"""Adversarial probe rows for the parity gate: where a converted graph is likeliest to differ.

Each probe is a held-out row with one field replaced: numbers exactly at and one float
step around every tree split threshold (found by bisection through the pipeline's own
transforms, so scaled or logged inputs are covered too), the training range and far beyond,
hour and day boundaries of timestamps, unseen categories, empty, non-ASCII, upper-cased and
huge text, missing values, and extreme images (all black, all white, noise).
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
MAX_THRESHOLDS = 256
"""Per feature; beyond this many distinct thresholds, an even spread of them is probed."""
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
    at_thresholds = threshold_values(pipeline, heldout)
    for spec in heldout.spec:
        column = heldout.columns[spec.name]
        values = list(_VALUES[spec.kind](spec, column, rng))
        values += [(v, "tree threshold") for v in at_thresholds.get(spec.name, [])]
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
        for text in column[:N_BASE_ROWS, 0]:
            yield str(text).upper(), "upper-cased text"
            yield str(text).title(), "title-cased text"


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


def _model_input(pipeline: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The final estimator, and the function giving its input from a frame of raw fields."""
    steps = getattr(pipeline, "steps", None)
    if steps and len(steps) > 1:
        return steps[-1][1], pipeline[:-1].transform
    head = steps[-1][1] if steps else pipeline

    def as_matrix(frame: Any) -> Any:
        return frame.to_numpy(dtype=np.float64)

    return head, as_matrix


@dataclass(frozen=True, slots=True)
class _Search:
    """Where the model's input ``feature`` crosses ``thresholds`` as raw ``field`` goes low → high."""

    field: str
    feature: int
    thresholds: NDArray[np.float64]
    rising: bool
    bounds: tuple[float, float]


def _dense(out: Any) -> NDArray[np.float64]:
    return np.asarray(out.toarray() if hasattr(out, "toarray") else out, dtype=np.float64)


def _bounds(column: NDArray[np.float64]) -> tuple[float, float] | None:
    finite = column[np.isfinite(column)]
    if finite.size < 2:
        return None
    low, high = float(finite.min()), float(finite.max())
    span = max(high - low, 1.0)
    return low - span, high + span


def _with_values(base: Batch, assignments: list[tuple[str, NDArray[np.float64]]]) -> Batch:
    """``base``'s first row repeated, each block of rows with one field set to the given values."""
    n = sum(len(values) for _, values in assignments)
    batch = base.take(np.zeros(n, dtype=np.intp))
    columns = {k: v.copy() for k, v in batch.columns.items()}
    start = 0
    for field, values in assignments:
        columns[field][start : start + len(values), 0] = values
        start += len(values)
    return Batch(base.spec, columns)


def _searches(transform: Callable[[Any], Any], heldout: Batch, thresholds: dict[int, Any]) -> list[_Search]:
    """For each numeric field, the thresholds of the features it moves (one transform call)."""
    bounds = {f.name: _bounds(heldout.columns[f.name]) for f in heldout.spec if f.kind == "numeric"}
    fields = [(name, b) for name, b in bounds.items() if b is not None]
    if not fields:
        return []
    ends_batch = _with_values(heldout.take(np.zeros(1, dtype=np.intp)), [(n, np.array(b)) for n, b in fields])
    try:
        ends = _dense(transform(ends_batch.to_frame()))
    except (TypeError, ValueError):  # e.g. text fields a bare estimator reads as categories
        return []
    searches = []
    for i, (name, bound) in enumerate(fields):
        low, high = ends[2 * i], ends[2 * i + 1]
        for feature in np.flatnonzero(low != high):
            wanted = thresholds.get(int(feature), np.empty(0))
            lo, hi = sorted((low[feature], high[feature]))
            inside = wanted[(wanted > lo) & (wanted < hi)]
            if inside.size:
                rising = bool(low[feature] < high[feature])
                searches.append(_Search(name, int(feature), inside[:MAX_THRESHOLDS], rising, bound))
    return searches


def _ordered(x: NDArray[Any]) -> NDArray[np.int64]:
    """Float64 values as integers in the same order (adjacent floats are adjacent integers); an involution."""
    bits = np.ascontiguousarray(x).view(np.int64)
    flipped: NDArray[np.int64] = np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)
    return flipped


def threshold_values(pipeline: Any, heldout: Batch) -> dict[str, list[float]]:
    """Per numeric field: raw values putting a model input at each split threshold, ± one float step.

    All fields and thresholds are searched together, by bisection over the float64 values
    themselves (so the last value at or below a threshold and the first above are adjacent),
    through the pipeline's own transforms.
    """
    head, transform = _model_input(pipeline)
    thresholds = split_thresholds(head)
    searches = _searches(transform, heldout, thresholds) if thresholds else []
    if not searches:
        return {}
    fields = [s.field for s in searches for _ in s.thresholds]
    features = np.array([s.feature for s in searches for _ in s.thresholds])
    wanted = np.concatenate([s.thresholds for s in searches])
    rising = np.concatenate([np.full(s.thresholds.size, s.rising) for s in searches])
    lo = _ordered(np.array([s.bounds[0] for s in searches for _ in s.thresholds]))
    hi = _ordered(np.array([s.bounds[1] for s in searches for _ in s.thresholds]))
    base = heldout.take(np.zeros(1, dtype=np.intp))
    for _ in range(BISECTION_STEPS):
        if (lo >= hi - 1).all():  # adjacent (no subtraction of the two: it could overflow)
            break
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)
        values = _ordered(mid).view(np.float64)
        batch = _with_values(base, [(f, values[i : i + 1]) for i, f in enumerate(fields)])
        seen = _dense(transform(batch.to_frame()))[np.arange(len(fields)), features]
        go_low = (seen > wanted) == rising
        hi, lo = np.where(go_low, mid, hi), np.where(go_low, lo, mid)
    found: dict[str, list[float]] = {}
    for field, below, above in zip(
        fields, _ordered(lo).view(np.float64), _ordered(hi).view(np.float64), strict=True
    ):
        found.setdefault(field, []).extend(_around(float(below), float(above)))
    return {field: list(dict.fromkeys(values)) for field, values in found.items()}


def _around(below: float, above: float) -> list[float]:
    """The two values either side of a threshold, one float64 step beyond each, and their float32 twins."""
    values = [below, above, float(np.nextafter(below, -np.inf)), float(np.nextafter(above, np.inf))]
    for x in (below, above):
        x32 = np.float32(x)
        values += [float(x32), *(float(np.nextafter(x32, np.float32(s))) for s in (-np.inf, np.inf))]
    return values


def _hist_feature_order(head: Any) -> NDArray[np.intp] | None:
    """Input column of each feature HistGradientBoosting's trees see (categorical ones come first)."""
    preprocessor = getattr(head, "_preprocessor", None)
    if preprocessor is None:
        return None
    order = []
    for _, _, selection in preprocessor.transformers_:
        selected = np.asarray(selection)
        order += list(np.flatnonzero(selected) if selected.dtype == bool else selected)
    return np.asarray(order, dtype=np.intp)


def split_thresholds(head: Any) -> dict[int, NDArray[np.float64]]:
    """Every numeric split threshold of a tree model, per input feature index (empty for others)."""
    pairs: list[tuple[NDArray[np.int64], NDArray[np.float64]]] = []
    order = _hist_feature_order(head)
    for predictors in getattr(head, "_predictors", []):
        for predictor in predictors:
            nodes = predictor.nodes
            split = (nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 0)
            features = nodes["feature_idx"][split].astype(np.intp)
            pairs.append((features if order is None else order[features], nodes["num_threshold"][split]))
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
