"""Request ids of the prediction log: UUIDv7, unique, in time order."""

from __future__ import annotations

import uuid

from skewguard.gateway.records import new_request_id


def test_a_request_id_is_a_uuid7_carrying_its_millisecond() -> None:
    ns = 1_780_000_000_123_456_789
    parsed = uuid.UUID(hex=new_request_id(ns))
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == ns // 1_000_000
    assert (parsed.int >> 64) & 0xFFF == (456_789 * 4096) // 1_000_000  # the sub-millisecond part


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    stamps = [1_780_000_000_000_000_000 + step * 250_000 for step in range(2_000)]  # 0.25 ms apart
    ids = [new_request_id(ns) for ns in stamps]
    assert ids == sorted(ids)
    same_instant = {new_request_id(stamps[0]) for _ in range(10_000)}
    assert len(same_instant) == 10_000  # 62 random bits tell apart ids of one instant
