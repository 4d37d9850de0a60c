"""Late labels joined to logged rows: by the cascade's entity key and event time, or by request id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from skewguard.errors import ConfigError
from skewguard.monitoring.labels import join_labels, read_labels


def _record(request_id: str, row: int, customer: Any, when: Any) -> dict[str, Any]:
    return {"request_id": request_id, "row": row, "fields": {"customer_id": customer, "order_ts": when}}


RECORDS = [
    _record("a", 0, 7, "2026-07-01T10:00:00.123000+00:00"),  # ISO text as a client sent it
    _record("a", 1, 8, "2026-07-01T12:00:00+02:00"),  # another offset: the same instant as 10:00Z
    _record("b", 0, 7, 1_782_900_000.0),  # epoch seconds
    _record("c", 0, 9, "2026-07-02T00:00:00Z"),  # no label known yet
]
LABELS = pd.DataFrame(
    {
        "customer_id": [7, 8, 7, 9],
        "order_ts": pd.to_datetime(
            ["2026-07-01 10:00:00.123", "2026-07-01 10:00:00", "2026-07-01 10:00:00", "2026-07-03"],
            utc=True,
            format="ISO8601",
        ),
        "returned": [1, 0, 1, 1],
    }
)


def test_labels_join_by_entity_key_and_event_time_in_utc_to_the_millisecond() -> None:
    labels = pd.concat(
        [
            LABELS,
            pd.DataFrame(
                {
                    "customer_id": [7],
                    "order_ts": [pd.Timestamp(1_782_900_000, unit="s", tz="UTC")],
                    "returned": [0],
                }
            ),
        ]
    )
    joined = join_labels(RECORDS, labels, target="returned", entity_key="customer_id", time_field="order_ts")
    assert joined == {("a", 0): 1, ("a", 1): 0, ("b", 0): 0}


def test_a_missing_label_is_left_out_never_guessed() -> None:
    labels = LABELS.assign(returned=[1, None, 1, 1])
    joined = join_labels(RECORDS, labels, target="returned", entity_key="customer_id", time_field="order_ts")
    assert ("a", 1) not in joined
    assert joined[("a", 0)] == 1


def test_labels_join_by_request_id_and_row_when_the_table_has_them() -> None:
    labels = pd.DataFrame(
        {"request_id": ["a", "a", "c", "zzz"], "row": [0, 1, 0, 0], "returned": [1, 0, 0, 1]}
    )
    joined = join_labels(RECORDS, labels, target="returned")
    assert joined == {("a", 0): 1, ("a", 1): 0, ("c", 0): 0}
    without_rows = join_labels(RECORDS, labels.drop(columns="row").iloc[2:], target="returned")
    assert without_rows == {("c", 0): 0}


@pytest.mark.parametrize(
    ("labels", "options", "field"),
    [
        (
            LABELS.drop(columns="returned"),
            {"entity_key": "customer_id", "time_field": "order_ts"},
            "returned",
        ),
        (
            LABELS.drop(columns="order_ts"),
            {"entity_key": "customer_id", "time_field": "order_ts"},
            "order_ts",
        ),
        (LABELS, {"entity_key": None, "time_field": "order_ts"}, "labels"),
    ],
)
def test_labels_that_cannot_be_joined_name_what_is_missing(
    labels: pd.DataFrame, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        join_labels(RECORDS, labels, target="returned", **options)
    assert caught.value.field == field


def test_labels_are_read_from_csv_or_parquet(tmp_path: Path) -> None:
    LABELS.to_csv(tmp_path / "labels.csv", index=False)
    LABELS.to_parquet(tmp_path / "labels.parquet")
    for name in ("labels.csv", "labels.parquet"):
        joined = join_labels(
            RECORDS,
            read_labels(tmp_path / name),
            target="returned",
            entity_key="customer_id",
            time_field="order_ts",
        )
        assert joined[("a", 0)] == 1
    (tmp_path / "labels.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"\.csv or \.parquet"):
        read_labels(tmp_path / "labels.txt")
    with pytest.raises(ConfigError, match="cannot be read"):
        read_labels(tmp_path / "missing.csv")
