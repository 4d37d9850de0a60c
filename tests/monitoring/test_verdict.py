"""The verdict policy, on hand-made findings: no Evidently, no data."""

from __future__ import annotations

import pytest

from skewguard.errors import ConfigError
from skewguard.monitoring.findings import Check, ColumnDrift, Verdict
from skewguard.monitoring.verdict import DriftPolicy, combine, decide


def _column(name: str, drifted: bool) -> ColumnDrift:
    return ColumnDrift(name, "numeric", (Check("wasserstein", 0.3 if drifted else 0.02, 0.1, drifted),))


COLUMNS = [
    _column("price", True),
    _column("quantity", False),
    _column("channel", False),
    _column("hour", False),
]


def test_a_watched_column_that_drifts_means_drift() -> None:
    verdict = decide(COLUMNS, n_reference=5_000, n_current=2_000, policy=DriftPolicy(min_rows=100))
    assert verdict.drift is True
    assert verdict.reasons == ("price drifted: wasserstein 0.3 (threshold 0.1)",)


def test_an_unwatched_column_alone_does_not() -> None:
    policy = DriftPolicy(min_rows=100, watched=frozenset({"quantity", "channel"}))
    verdict = decide(COLUMNS, n_reference=5_000, n_current=2_000, policy=policy)
    assert verdict == Verdict(False, ("1 of 4 columns drifted: price, not watched",))


def test_too_large_a_share_of_drifted_columns_means_drift() -> None:
    policy = DriftPolicy(min_rows=100, max_share=0.2, watched=frozenset())
    verdict = decide(COLUMNS, n_reference=5_000, n_current=2_000, policy=policy)
    assert verdict.drift is True
    assert verdict.reasons == ("1 of 4 columns drifted (25%, more than 20%)",)


def test_fewer_rows_than_min_rows_gives_no_verdict() -> None:
    policy = DriftPolicy(min_rows=500)
    verdict = decide(COLUMNS, n_reference=5_000, n_current=499, policy=policy)
    assert verdict.drift is None
    assert verdict.reasons == ("not enough data: 499 current rows, at least 500 needed",)
    small_reference = decide(COLUMNS, n_reference=10, n_current=2_000, policy=policy)
    assert small_reference.reasons == ("not enough data: 10 reference rows, at least 500 needed",)


def test_columns_without_data_do_not_count() -> None:
    columns = [*COLUMNS, ColumnDrift("image", "numeric", no_data="all values missing in current")]
    policy = DriftPolicy(min_rows=1, max_share=0.25, watched=frozenset())
    assert decide(columns, n_reference=10, n_current=10, policy=policy).drift is False  # 1 of 4, not 5
    only_empty = [ColumnDrift("image", "numeric", no_data="missing in current")]
    assert decide(only_empty, n_reference=10, n_current=10, policy=policy).drift is None


def test_a_drifting_branch_makes_the_run_drift() -> None:
    overall = Verdict(False, ("0 of 4 columns drifted",))
    branches = {
        "reseller": Verdict(True, ("price drifted: ...",)),
        "retail": Verdict(None, ("not enough data",)),
    }
    assert combine(overall, branches) == Verdict(True, ("reseller: price drifted: ...",))
    calm = combine(overall, {"retail": Verdict(False, ("0 of 4 columns drifted",))})
    assert calm.drift is False
    assert calm.reasons == ("overall: 0 of 4 columns drifted", "retail: 0 of 4 columns drifted")
    assert combine(Verdict(None, ("not enough data",)), branches).drift is None


@pytest.mark.parametrize(("min_rows", "max_share"), [(0, 0.5), (10, 1.5), (10, -0.1)])
def test_a_nonsensical_policy_is_refused(min_rows: int, max_share: float) -> None:
    with pytest.raises(ConfigError):
        DriftPolicy(min_rows=min_rows, max_share=max_share)
