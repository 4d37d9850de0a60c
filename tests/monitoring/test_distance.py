"""The L-infinity distance, checked by hand."""

from __future__ import annotations

import math

import pytest

from skewguard.errors import ConfigError
from skewguard.monitoring.distance import category_shares, linf_distance


def test_linf_is_the_largest_share_change() -> None:
    reference = ["a", "a", "b", "c"]  # a .50, b .25, c .25
    current = ["a", "b", "b", "d"]  # a .25, b .50, d .25
    # |Δa| = .25, |Δb| = .25, |Δc| = .25 (gone), |Δd| = .25 (new)
    assert linf_distance(reference, current) == pytest.approx(0.25)


def test_a_new_category_counts_with_its_whole_share() -> None:
    reference = ["web"] * 60 + ["app"] * 40
    current = ["web"] * 48 + ["app"] * 32 + ["drones"] * 20  # web .48, app .32, drones .20
    assert linf_distance(reference, current) == pytest.approx(0.20)


def test_identical_distributions_are_at_distance_zero_whatever_the_sizes() -> None:
    assert linf_distance(["x", "y"] * 10, ["y", "x"] * 500) == 0.0


def test_missing_values_are_left_out() -> None:
    assert category_shares(["a", None, math.nan, "b"]) == {"a": 0.5, "b": 0.5}
    assert linf_distance(["a", "b", None], ["a", "b", math.nan, math.nan]) == 0.0


def test_a_side_without_values_is_an_error() -> None:
    with pytest.raises(ConfigError, match="the current has none"):
        linf_distance(["a"], [None])
