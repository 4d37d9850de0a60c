"""Drift findings: what the drift job found, as our own values (no Evidently type leaks out).

    DriftSummary            one run: the combined verdict, overall and per branch
    ├── ScopeDrift          one comparison: all rows, or the rows of one cascade branch
    │   ├── ColumnDrift     one column: its checks, or why it had no data
    │   │   └── Check       one statistical test: method, score, threshold, drifted
    │   └── Verdict         drift yes / no / undecided (None), with the reasons
    └── Verdict

A score's direction depends on its method (a p-value drifts when *below* the threshold, a
distance when above it); ``drifted`` is the test's own decision, so read that, not the score.
``to_dict`` gives the JSON summary's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

SUMMARY_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Check:
    """One statistical test of one column."""

    method: str
    score: float
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        score = self.score if math.isfinite(self.score) else None  # JSON has no NaN
        return {"method": self.method, "score": score, "threshold": self.threshold, "drifted": self.drifted}


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column: the checks run on it, or — when it could not be checked — why."""

    column: str
    kind: str
    checks: tuple[Check, ...] = ()
    no_data: str = ""
    """Why the column was not checked (e.g. "all values missing in current"); empty if checked."""

    @property
    def status(self) -> Literal["checked", "no data"]:
        return "no data" if self.no_data else "checked"

    @property
    def drifted(self) -> bool:
        return any(check.drifted for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "reason": self.no_data or None,
            "drifted": self.drifted,
            "checks": [check.to_dict() for check in self.checks],
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """``drift`` is True, False, or None when there was not enough data to decide."""

    drift: bool | None
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"drift": self.drift, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class ScopeDrift:
    """Reference against current for one scope: ``overall`` or a branch (route) name."""

    scope: str
    n_reference: int
    n_current: int
    columns: tuple[ColumnDrift, ...]
    verdict: Verdict

    @property
    def checked(self) -> tuple[ColumnDrift, ...]:
        return tuple(c for c in self.columns if c.status == "checked")

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.columns if c.drifted)

    @property
    def share_drifted(self) -> float | None:
        """Drifted columns among the checked ones; None when none was checked."""
        checked = self.checked
        return sum(c.drifted for c in checked) / len(checked) if checked else None

    def column(self, name: str) -> ColumnDrift:
        for column in self.columns:
            if column.column == name:
                return column
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "share_drifted": self.share_drifted,
            "verdict": self.verdict.to_dict(),
            "columns": {c.column: c.to_dict() for c in self.columns},
        }


@dataclass(frozen=True, slots=True)
class DriftSummary:
    """One drift run: the combined verdict, the overall comparison and one per branch."""

    cascade: str
    created_at: datetime
    verdict: Verdict
    overall: ScopeDrift
    branches: tuple[ScopeDrift, ...] = ()
    notes: tuple[str, ...] = ()
    """What the run could not do (e.g. no branch comparison without reference routes)."""
    window: tuple[datetime, datetime] | None = None
    """First and last timestamp of the current rows, when known."""

    def branch(self, name: str) -> ScopeDrift:
        for scope in self.branches:
            if scope.scope == name:
                return scope
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        window = None
        if self.window is not None:
            window = {"start": self.window[0].isoformat(), "end": self.window[1].isoformat()}
        return {
            "format": SUMMARY_FORMAT,
            "cascade": self.cascade,
            "created_at": self.created_at.isoformat(),
            "window": window,
            "verdict": self.verdict.to_dict(),
            "overall": self.overall.to_dict(),
            "branches": {scope.scope: scope.to_dict() for scope in self.branches},
            "notes": list(self.notes),
        }
