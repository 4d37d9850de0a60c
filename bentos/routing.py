"""Running a cascade over a batch: the router's rule picks each row's branch, each branch answers its rows.

The same code answers in the gateway (co-located), in the monitor's replay and in the
retraining comparison, so the three cannot route differently. A cascade without a router
is its one model. Classifiers answer a label and ``{class: probability}``, regressors a
number (``probabilities`` is None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skewguard.bentos.inputs import Batch
from skewguard.bentos.manifest import RouterRef
from skewguard.bentos.runner import OnnxRunner


@dataclass(frozen=True, slots=True)
class RowResult:
    """One row through a cascade: its branch, the router's deciding probability, the answer."""

    route: str
    router_probability: float | None
    prediction: Any
    probabilities: dict[str, float] | None


def route_rows(
    rule: RouterRef | None, routed: Sequence[Mapping[str, Any]], branch: str
) -> tuple[list[str], list[float | None]]:
    """Each row's branch and deciding probability from the router's answers (``branch`` without one)."""
    if rule is None:
        return [branch] * len(routed), [None] * len(routed)
    chosen = [rule.choose(answer["probabilities"]) for answer in routed]
    return [route for route, _ in chosen], [p for _, p in chosen]


def answers_by_branch(routes: Sequence[str], branches: Sequence[str]) -> list[tuple[str, list[int]]]:
    """For each branch that got rows, the positions of its rows (in order)."""
    groups: dict[str, list[int]] = {branch: [] for branch in branches}
    for i, route in enumerate(routes):
        groups[route].append(i)
    return [(branch, index) for branch, index in groups.items() if index]


def run_cascade(
    rule: RouterRef | None, router: OnnxRunner | None, branches: Mapping[str, OnnxRunner], batch: Batch
) -> list[RowResult]:
    """The router over ``batch``, then each branch's model over the rows routed to it, once each."""
    routed = router.predict_batch(batch) if router is not None else [{}] * len(batch)
    routes, p_router = route_rows(rule, routed, next(iter(branches)))
    answers: list[Mapping[str, Any]] = [{}] * len(routes)
    for branch, index in answers_by_branch(routes, list(branches)):
        rows = batch if len(index) == len(routes) else batch.take(np.asarray(index, dtype=np.intp))
        for position, answer in zip(index, branches[branch].predict_batch(rows), strict=True):
            answers[position] = answer
    return [to_result(route, p, answer) for route, p, answer in zip(routes, p_router, answers, strict=True)]


def to_result(route: str, p_router: float | None, answer: Mapping[str, Any]) -> RowResult:
    """A model's answer for one row (``{"label", "probabilities"}`` or ``{"prediction"}``) as a result."""
    if "probabilities" in answer:
        return RowResult(route, p_router, answer["label"], answer["probabilities"])
    return RowResult(route, p_router, answer["prediction"], None)
