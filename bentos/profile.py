"""The training profile: what the model's training data looked like, field by field.

Stored beside the graph as JSON. The gateway's request-time skew guard compares each
request with it (range, unseen category, out-of-vocabulary text, image statistics), and
monitoring uses it as the reference summary.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from skewguard.bentos.images import pixel_stats
from skewguard.bentos.inputs import Batch
from skewguard.bentos.spec import FieldSpec

QUANTILES = (0.0, 0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999, 1.0)
HISTOGRAM_BINS = 20
TOP_CATEGORIES = 200
TOP_TOKENS = 5_000
TOKEN_PATTERN = re.compile(r"[a-zA-Z0-9_]+")


def build_profile(batch: Batch) -> dict[str, Any]:
    """Per-field statistics of ``batch`` (the training rows), JSON-ready."""
    fields = {spec.name: _profile_field(spec, batch.columns[spec.name]) for spec in batch.spec}
    return {"n_rows": len(batch), "fields": fields}


def _profile_field(spec: FieldSpec, column: NDArray[Any]) -> dict[str, Any]:
    if spec.kind == "numeric":
        return _numbers(column[:, 0])
    if spec.kind == "datetime":
        return _timestamps(column[:, 0])
    if spec.kind == "image":
        return _images(column)
    strings = [str(v) for v in column[:, 0]]
    return _text(strings) if spec.kind == "text" else _categories(strings)


def _numbers(values: NDArray[np.float64]) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    missing = float(np.isnan(values).mean()) if values.size else 0.0
    if finite.size == 0:
        return {"kind": "numeric", "count": 0, "missing_share": missing}
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
    return {
        "kind": "numeric",
        "count": int(finite.size),
        "missing_share": missing,
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "quantiles": {
            str(q): float(v) for q, v in zip(QUANTILES, np.quantile(finite, QUANTILES), strict=True)
        },
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "median": float(np.median(finite)),
    }


def _timestamps(seconds: NDArray[np.float64]) -> dict[str, Any]:
    profile = _numbers(seconds)
    finite = seconds[np.isfinite(seconds)]
    hours = np.floor(np.mod(finite, 86400) / 3600).astype(int)
    profile.update(kind="datetime", hour_counts=np.bincount(hours, minlength=24).tolist())
    return profile


def _categories(values: list[str]) -> dict[str, Any]:
    counts = Counter(values)
    total = max(len(values), 1)
    return {
        "kind": "categorical",
        "count": len(values),
        "n_unique": len(counts),
        "frequencies": {k: v / total for k, v in counts.most_common(TOP_CATEGORIES)},
    }


def _text(values: list[str]) -> dict[str, Any]:
    token_lists = [TOKEN_PATTERN.findall(v.lower()) for v in values]
    tokens = Counter(t for tokens in token_lists for t in tokens)
    lengths = np.array([len(v) for v in values] or [0], dtype=np.float64)
    n_tokens = np.array([len(t) for t in token_lists] or [0], dtype=np.float64)
    return {
        "kind": "text",
        "count": len(values),
        "empty_share": float(np.mean([not v.strip() for v in values])) if values else 0.0,
        "length_quantiles": {
            str(q): float(v) for q, v in zip(QUANTILES, np.quantile(lengths, QUANTILES), strict=True)
        },
        "token_quantiles": {
            str(q): float(v) for q, v in zip(QUANTILES, np.quantile(n_tokens, QUANTILES), strict=True)
        },
        "vocabulary": sorted(t for t, _ in tokens.most_common(TOP_TOKENS)),
    }


def _images(pixels: NDArray[np.float32]) -> dict[str, Any]:
    rgb = pixels.reshape(len(pixels), -1, 3).astype(np.float64)
    brightness, contrast = np.array([pixel_stats(image) for image in rgb]).reshape(-1, 2).T
    channel_means = rgb.mean(axis=1)
    return {
        "kind": "image",
        "count": len(pixels),
        "brightness": _numbers(brightness),
        "contrast": _numbers(contrast),
        "channel_means": [float(x) for x in channel_means.mean(axis=0)],
        "channel_stds": [float(x) for x in channel_means.std(axis=0)],
    }
