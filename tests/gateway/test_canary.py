"""Canary assignment as pure policy: a routing key per row, the same answer everywhere, the set share."""

from __future__ import annotations

import pytest

from skewguard.gateway.canary import canary_rows, is_canary, routing_keys, share_of

TAG = "cascade-returns:candidate1"


@pytest.mark.parametrize("share", [0.05, 0.1, 0.5, 0.9])
def test_the_share_of_keys_a_canary_answers_is_its_share(share: float) -> None:
    keys = [str(100_000 + i) for i in range(20_000)]
    answered = sum(is_canary(key, share, TAG) for key in keys) / len(keys)
    assert answered == pytest.approx(share, abs=0.01)  # binomial sd at most 0.0035 here


def test_a_key_always_gets_the_same_answer_and_each_candidate_a_cohort_of_its_own() -> None:
    keys = [f"customer-{i}" for i in range(2_000)]
    first = [is_canary(key, 0.3, TAG) for key in keys]
    assert first == [is_canary(key, 0.3, TAG) for key in keys]  # no state, no randomness
    other = [is_canary(key, 0.3, "cascade-returns:candidate2") for key in keys]
    overlap = sum(a and b for a, b in zip(first, other, strict=True)) / max(sum(first), 1)
    assert overlap == pytest.approx(0.3, abs=0.06)  # independent cohorts, not the same customers again


def test_a_larger_share_keeps_every_key_of_a_smaller_one() -> None:
    keys = [str(i) for i in range(5_000)]
    small = {key for key in keys if is_canary(key, 0.1, TAG)}
    large = {key for key in keys if is_canary(key, 0.25, TAG)}
    assert small <= large  # raising a canary's share never moves an entity back to the champion


def test_shares_fall_in_the_unit_interval() -> None:
    values = [share_of(str(i), TAG) for i in range(1_000)]
    assert all(0.0 <= v < 1.0 for v in values)


def test_the_routing_key_is_the_entity_key_else_the_header_else_the_request_id() -> None:
    rows = [{"customer_id": 42, "price": 1.0}, {"customer_id": "abc"}, {"price": 2.0}]
    assert routing_keys(rows, "customer_id", None, "req-1") == ["42", "abc", "req-1"]
    assert routing_keys(rows, "customer_id", "session-9", "req-1") == ["42", "abc", "session-9"]
    assert routing_keys(rows, None, "session-9", "req-1") == ["session-9"] * 3
    assert routing_keys(rows, None, None, "req-1") == ["req-1"] * 3
    assert routing_keys([{"customer_id": True}], "customer_id", None, "req-1") == ["req-1"]


def test_canary_rows_are_the_indices_of_the_keys_it_answers() -> None:
    keys = [str(i) for i in range(100)]
    chosen = canary_rows(keys, 0.5, TAG)
    assert chosen == [i for i, key in enumerate(keys) if is_canary(key, 0.5, TAG)]
    assert canary_rows(keys, 1e-12, TAG) == []
