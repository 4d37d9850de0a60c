"""The prediction log's records: what was served for one row, how an image is summarised, reading them back.

The gateway writes them (``skewguard.gateway.predlog``); the monitor and the retraining
flow read them (:func:`read_records`) without importing the gateway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from skewguard.bentos.images import decode_image, pixel_stats
from skewguard.predictionlog.store import open_store


@dataclass(slots=True)  # not frozen: one is built per served row, and a frozen one costs several times more
class PredictionRecord:
    """What was served for one row of one request. Every value is JSON-ready; not changed once built.

    ``fields`` holds the raw input fields as received, except images, which are replaced
    by ``image_summary(...)``; ``flags`` are the skew guard's flags for this row.
    ``variant`` says who answered (``champion`` or ``canary``), ``latency_ms`` how long that
    variant took for the whole request, and ``candidate`` what the attached candidate did
    with the same row when it did not answer it: a shadow's answer (``variant``,
    ``version``, ``prediction``, ``probabilities``, ``route``, ``flags``, ``latency_ms``), or
    ``error`` / ``dropped`` when it failed or was shed under load.
    """

    request_id: str
    row: int
    ts: float
    cascade: str
    fields: dict[str, Any]
    online_features: dict[str, float | None]
    defaults_used: bool
    prediction: Any
    probabilities: dict[str, float] | None
    """A classifier's ``{class: probability}``; None for a regressor's answer."""
    route: str
    versions: dict[str, str]
    flags: list[dict[str, str]]
    variant: str = "champion"
    latency_ms: float | None = None
    candidate: dict[str, Any] | None = None


def image_summary(image: bytes | str | NDArray[Any], pixels: NDArray[Any] | None = None) -> dict[str, Any]:
    """The sha256 and size of an image as sent, and the statistics of its decoded pixels.

    ``image`` is what the client sent (encoded bytes, or the base64 text of them) or an
    already decoded uint8 array. Pass the decoded ``pixels`` when you have them; otherwise
    the bytes are decoded here. ``brightness`` and ``contrast`` are the mean and standard
    deviation of the 0–255 pixel values, as in the training profile. The bytes themselves
    are never part of the summary.
    """
    if isinstance(image, np.ndarray):
        raw = np.ascontiguousarray(image).tobytes()
        pixels = image if pixels is None else pixels
    elif isinstance(image, str):
        try:
            raw = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raw = image.encode()  # not base64: still identify it, without keeping it
    else:
        raw = bytes(image)
    if pixels is None:
        pixels = decode_image(raw)
    rgb = np.asarray(pixels, dtype=np.float64).reshape(-1, 3)
    brightness, contrast = pixel_stats(rgb)
    return {
        "sha256": hashlib.sha256(raw).hexdigest(),
        "n_bytes": len(raw),
        "brightness": brightness,
        "contrast": contrast,
        "channel_means": [float(x) for x in rgb.mean(axis=0)],
    }


def read_records(
    url: str,
    *,
    table: str = "predictions",
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Records with ``since <= ts < until``, oldest first (synchronous, for the monitor job).

    Each record is a dict with the fields of ``PredictionRecord``. Raises
    ``PredictionLogError`` when the database cannot be read.
    """
    store = open_store(url, table=table)
    try:
        return store.read(since, until, limit)
    finally:
        store.close()
