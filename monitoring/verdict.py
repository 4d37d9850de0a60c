"""The drift verdict: a pure policy from column findings to "drift", "no drift" or "undecided".

A scope (all rows, or one branch) is undecided when either side has fewer than
``min_rows`` rows: the distance tests' noise grows as the sample shrinks (on the demo data,
~300 rows per side let unchanged columns cross a 0.1 normed-Wasserstein threshold), so a
small window says "not enough data" instead of guessing. Otherwise it drifts when a watched
column drifts, or when more than ``max_share`` of the checked columns drift. The run's
verdict is drift when any decided scope drifts: a change confined to a small branch is
diluted in the overall comparison but not in its own.

Feature skew (``skewguard.monitoring.skew``: served online values that are not the offline ones)
joins the run's verdict through :func:`with_skew`: without skew the verdict stays what
drift made it; with skew it says drift, and each skew reason begins "feature skew:".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from skewguard.errors import ConfigError
from skewguard.monitoring.findings import ColumnDrift, Verdict

DEFAULT_MIN_ROWS = 500
DEFAULT_MAX_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class DriftPolicy:
    """When a comparison counts as drift; ``watched=None`` watches every column."""

    min_rows: int = DEFAULT_MIN_ROWS
    max_share: float = DEFAULT_MAX_SHARE
    watched: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.min_rows < 1:
            raise ConfigError(
                f"DriftPolicy.min_rows is {self.min_rows}; expected at least 1.", field="min_rows"
            )
        if not 0.0 <= self.max_share <= 1.0:
            raise ConfigError(
                f"DriftPolicy.max_share is {self.max_share}; expected a share in [0, 1].", field="max_share"
            )

    def is_watched(self, column: str) -> bool:
        return self.watched is None or column in self.watched


def decide(
    columns: Sequence[ColumnDrift], *, n_reference: int, n_current: int, policy: DriftPolicy
) -> Verdict:
    """The verdict of one scope from its column findings."""
    for side, n in (("current", n_current), ("reference", n_reference)):
        if n < policy.min_rows:
            return Verdict(None, (f"not enough data: {n} {side} rows, at least {policy.min_rows} needed",))
    checked = [c for c in columns if c.status == "checked"]
    if not checked:
        return Verdict(None, ("not enough data: no column could be checked",))
    drifted = [c for c in checked if c.drifted]
    share = len(drifted) / len(checked)
    reasons = [_describe(c) for c in drifted if policy.is_watched(c.column)]
    if share > policy.max_share:
        limit = f"more than {policy.max_share:.0%}"
        reasons.append(f"{len(drifted)} of {len(checked)} columns drifted ({share:.0%}, {limit})")
    if reasons:
        return Verdict(True, tuple(reasons))
    unwatched = f": {', '.join(c.column for c in drifted)}, not watched" if drifted else ""
    return Verdict(False, (f"{len(drifted)} of {len(checked)} columns drifted{unwatched}",))


def combine(overall: Verdict, branches: Mapping[str, Verdict]) -> Verdict:
    """The run's verdict: drift if any decided scope drifts, prefixed with the scope."""
    if overall.drift is None:
        return overall
    scopes = {"overall": overall, **branches}
    drifting = [f"{name}: {reason}" for name, v in scopes.items() if v.drift for reason in v.reasons]
    if drifting:
        return Verdict(True, tuple(drifting))
    return Verdict(False, tuple(f"{name}: {reason}" for name, v in scopes.items() for reason in v.reasons))


def with_skew(verdict: Verdict, skew_reasons: Sequence[str]) -> Verdict:
    """The run's verdict with feature skew as a reason: unchanged when ``skew_reasons`` is empty.

    Skew is a count of served values that differ from the offline store, not a statistical
    test, so it decides even when the drift comparison had too few rows; the drift reasons
    are kept only when drift itself was found.
    """
    if not skew_reasons:
        return verdict
    return Verdict(True, (*(verdict.reasons if verdict.drift else ()), *skew_reasons))


def _describe(column: ColumnDrift) -> str:
    checks = ", ".join(
        f"{check.method} {check.score:.3g} (threshold {check.threshold:g})"
        for check in column.checks
        if check.drifted
    )
    return f"{column.column} drifted: {checks}"
