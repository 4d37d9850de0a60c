"""Late labels joined to logged rows: which true answer belongs to which served row.

Labels arrive after the answers (a return is known weeks after the order). They come as a
table — CSV or Parquet, such as the labeled history the next training run reads — with the
cascade's target column and one of two keys:

    request_id (+ row)             the ids the gateway answered with (``request_id`` in each
                                   response; ``row`` the row's index in a batch, 0 if absent)
    entity key + event time field  the cascade's entity key and the request field that dates
                                   the row (its manifest's ``entity_key`` and ``event_time_field``)

The second needs nothing from clients: a logged row's entity key and event time are in its
raw fields, and the labeled history holds the same two columns. Times are compared in UTC to
the millisecond (ISO-8601 text, epoch seconds and datetimes alike); a label given twice for
one key counts once (the last). Rows without a label are left out of the metric, never
guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skewguard.errors import ConfigError

RowKey = tuple[str, int]
"""(request id, row index): a logged row."""


def read_labels(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A labels table from a ``.csv`` or ``.parquet`` file; only ``columns`` (those it has) when given."""
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".parquet", ".pq"}:
        raise ConfigError(f"The labels file {path}: expected a .csv or .parquet file.", field="labels")
    try:
        if suffix == ".csv":
            return pd.read_csv(path, usecols=lambda name: columns is None or name in columns)
        import pyarrow.parquet as pq

        present = pq.read_schema(path).names
        return pd.read_parquet(path, columns=[c for c in present if columns is None or c in columns])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"The labels file {path} cannot be read: {exc}", field="labels") from exc


def label_columns(target: str | None, entity_key: str | None, time_field: str | None) -> list[str]:
    """The columns a join reads: the target and either key (so a wide data file is read narrowly)."""
    return [c for c in (target, entity_key, time_field, "request_id", "row") if c is not None]


def join_labels(
    records: Sequence[Mapping[str, Any]],
    labels: pd.DataFrame,
    *,
    target: str,
    entity_key: str | None = None,
    time_field: str | None = None,
) -> dict[RowKey, Any]:
    """Each logged row's label, by request id when the table has ``request_id``, else by entity and time."""
    if target not in labels.columns:
        raise ConfigError(
            f"The labels have no column {target!r} (the cascade's target); columns: {_listed(labels)}.",
            field=target,
        )
    if "request_id" in labels.columns:
        return _by_request(records, labels, target)
    for column, what in ((entity_key, "entity key"), (time_field, "event time field")):
        if column is None:
            raise ConfigError(
                f"The labels have no request_id column, and the cascade has no {what} to join them by; "
                "give labels with request_id (and row) from the gateway's answers.",
                field="labels",
            )
        if column not in labels.columns:
            raise ConfigError(
                f"The labels have no column {column!r} (the cascade's {what}); columns: {_listed(labels)}.",
                field=column,
            )
    return _by_entity_and_time(records, labels, target, str(entity_key), str(time_field))


def _by_request(records: Sequence[Mapping[str, Any]], labels: pd.DataFrame, target: str) -> dict[RowKey, Any]:
    rows = labels["row"] if "row" in labels.columns else pd.Series(0, index=labels.index)
    known = dict(
        zip(zip(labels["request_id"].astype(str), rows.astype(int), strict=True), labels[target], strict=True)
    )
    wanted = {(str(r["request_id"]), int(r["row"])) for r in records}
    return {key: _native(known[key]) for key in wanted if key in known and not _missing(known[key])}


def _by_entity_and_time(
    records: Sequence[Mapping[str, Any]], labels: pd.DataFrame, target: str, entity: str, time_field: str
) -> dict[RowKey, Any]:
    moments = [_moment_ms(value) for value in labels[time_field]]
    known = {
        (str(e), m): y
        for e, m, y in zip(labels[entity], moments, labels[target], strict=True)
        if m is not None and not _missing(y)
    }
    found: dict[RowKey, Any] = {}
    for record in records:
        fields = record.get("fields") or {}
        key = (str(fields.get(entity)), _moment_ms(fields.get(time_field)))
        if key[1] is not None and key in known:
            found[(str(record["request_id"]), int(record["row"]))] = _native(known[key])
    return found


def _moment_ms(value: Any) -> int | None:
    """A time as UTC epoch milliseconds: ISO-8601 text, epoch seconds or a datetime; None if absent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            moment = pd.Timestamp(value, unit="s", tz="UTC")
        else:
            moment = pd.Timestamp(value)
            moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    except (ValueError, TypeError):
        return None
    if moment is pd.NaT:
        return None
    return round(int(moment.value) / 1_000_000)


def _native(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _listed(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns]
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
