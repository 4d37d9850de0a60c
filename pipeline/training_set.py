"""The training set of a cascade: the file's data, checked, joined point in time with its online features.

The data is a Parquet or CSV file; its event-time column is parsed as UTC timestamps. With a
``features`` section, every row gets its entity's feature values as of the row's event time
(Feast's point-in-time join), so training sees what serving would have fetched then. Image
columns hold encoded bytes in the training set (Parquet keeps them) and are decoded when it
is loaded for fitting, by the same function the gateway decodes requests with.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from skewguard.bentos.images import decode_image
from skewguard.featurestore.connection import FeastConfig
from skewguard.featurestore.repository import FeatureSelection, historical_features
from skewguard.pipeline.cascade_file import LoadedCascadeFile

DATA_SUFFIXES = (".parquet", ".csv")


def read_data(loaded: LoadedCascadeFile) -> pd.DataFrame:
    """The file's data with its event time parsed, every column it names checked to exist."""
    spec = loaded.spec
    path = loaded.resolve(spec.data.path)
    if path.suffix not in DATA_SUFFIXES:
        raise loaded.error("data.path", f"{path.name} is neither .parquet nor .csv.")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise loaded.error(
            "data.path", f"cannot read {path}: {exc}.", "Check the path (relative to the file)."
        ) from exc
    _check_columns(loaded, frame)
    try:
        frame[spec.data.timestamp] = pd.to_datetime(frame[spec.data.timestamp], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise loaded.error(
            "data.timestamp", f"column {spec.data.timestamp!r} does not hold timestamps: {exc}."
        ) from exc
    return frame


def _check_columns(loaded: LoadedCascadeFile, frame: pd.DataFrame) -> None:
    spec = loaded.spec
    named: dict[str, str] = {"data.timestamp": spec.data.timestamp, "data.target": spec.data.target}
    if spec.router is not None:
        named["router.target"] = spec.router.target
    if spec.features is not None:
        named["features.entity_key"] = spec.features.entity_key
    for branch, section in spec.branches.items():
        if section.target is not None:
            named[f"branches.{branch}.target"] = section.target
    for i, column in enumerate(spec.data.columns or []):
        named[f"data.columns.{i}"] = column
    for key, column in named.items():
        if column not in frame.columns:
            raise loaded.error(
                key,
                f"column {column!r} is not in the data ({loaded.resolve(spec.data.path).name}).",
                f"Its columns are: {_few(list(frame.columns))}.",
            )


def build_training_frame(
    loaded: LoadedCascadeFile, selection: FeatureSelection | None, feast: FeastConfig
) -> pd.DataFrame:
    """The data, with the selected online features as of each row's event time."""
    frame = read_data(loaded)
    if selection is None:
        return frame
    return historical_features(feast, frame, selection, timestamp_column=loaded.spec.data.timestamp)


def input_columns(
    loaded: LoadedCascadeFile, frame: pd.DataFrame, selection: FeatureSelection | None
) -> list[str]:
    """The columns every model reads: ``data.columns`` (else all but labels and the entity key),
    plus the online features."""
    spec = loaded.spec
    online = list(selection.refs) if selection else []
    if spec.data.columns is not None:
        return [*spec.data.columns, *(name for name in online if name not in spec.data.columns)]
    labels = {spec.data.target, *(s.target for s in spec.branches.values() if s.target)}
    if spec.router is not None:
        labels.add(spec.router.target)
    if spec.features is not None:
        labels.add(spec.features.entity_key)
    return [str(c) for c in frame.columns if c not in labels]


def load_training_set(path: str | Path, *, decode: bool = True) -> pd.DataFrame:
    """The training set, its image columns (encoded bytes) decoded unless ``decode`` is False."""
    frame = pd.read_parquet(path)
    if decode:
        for column in frame.columns:
            first = next((v for v in frame[column] if v is not None), None)
            if isinstance(first, bytes | bytearray):
                frame[column] = [decode_image(bytes(v), field=str(column)) for v in frame[column]]
    return frame


def split_by_time(frame: pd.DataFrame, timestamp: str, holdout: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oldest rows for training, the newest ``holdout`` share for evaluation (both reindexed)."""
    ordered = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * (1 - holdout))
    return ordered.iloc[:cut].reset_index(drop=True), ordered.iloc[cut:].reset_index(drop=True)


def _few(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:8])
    return shown + (", ..." if len(names) > 8 else "")
