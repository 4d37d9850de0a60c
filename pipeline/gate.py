"""The live gate: what a candidate must show beside the champion, on live traffic, to be promoted.

A candidate that passed the offline comparison is attached as a shadow or a canary for a
period — a number of requests it answered, or a time — and then judged on the live
comparison (``skewguard.monitoring.comparison``) by these rules:

    agreement     shadow, classification: the share of paired rows given the champion's label
                  is at least ``min_agreement`` (a better model disagrees a little, not wildly)
    metric gain   on at least ``min_labeled`` labeled rows, the gain (positive = better) is at
                  least ``min_gain`` and its 95 % interval lies above zero
    skew flags    no flag kind is raised on more than ``max_new_flag_rate`` more of the
                  candidate's rows than of the champion's
    latency       the candidate's p99 is at most ``max_p99_ratio`` × the champion's
    errors        the candidate failed at most ``max_error_rate`` of the requests it was given

A rule that lacks evidence yet (too few labeled rows) is *pending*: the verdict waits rather
than refuses. Any rule that fails refuses the candidate, pending or not. Pure policy: figures
in, a verdict with each rule's figure and limit out.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from skewguard.errors import ConfigError
from skewguard.monitoring.comparison import Comparison

Status = Literal["pass", "fail", "pending"]
_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


@dataclass(frozen=True, slots=True)
class LivePeriod:
    """How long a candidate serves beside the champion before it is judged: requests, or seconds."""

    requests: int | None = None
    seconds: float | None = None

    def is_complete(self, requests: int, elapsed: float) -> bool:
        if self.requests is not None:
            return requests >= self.requests
        return elapsed >= float(self.seconds or 0.0)

    def describe(self) -> str:
        return f"{self.requests} requests" if self.requests is not None else f"{self.seconds:g} s"


def parse_period(text: str) -> LivePeriod:
    """``2000`` (requests the candidate answered) or a duration: ``90s``, ``30m``, ``2h``, ``1d``."""
    match = _PERIOD.match(str(text))
    if match is None or float(match[1]) <= 0:
        raise ConfigError(
            f"Live period {text!r}: expected a number of requests (2000) or a duration (30m, 2h, 1d).",
            field="period",
        )
    if not match[2]:
        if not float(match[1]).is_integer():
            raise ConfigError(f"Live period {text!r}: a number of requests is whole.", field="period")
        return LivePeriod(requests=int(float(match[1])))
    return LivePeriod(seconds=float(match[1]) * _SECONDS[match[2]])


@dataclass(frozen=True, slots=True)
class GateRules:
    """The live gate's limits (see the module doc)."""

    min_agreement: float = 0.75
    min_gain: float = 0.0
    min_labeled: int = 200
    max_new_flag_rate: float = 0.01
    max_p99_ratio: float = 1.5
    max_error_rate: float = 0.01

    def __post_init__(self) -> None:
        for name in ("min_agreement", "max_new_flag_rate", "max_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"Gate rule {name} is {getattr(self, name)}; expected 0 to 1.", field=name)
        if self.max_p99_ratio <= 0 or self.min_labeled < 1:
            raise ConfigError(
                f"Gate rules: max_p99_ratio must be positive and min_labeled at least 1; got "
                f"{self.max_p99_ratio} and {self.min_labeled}.",
                field="max_p99_ratio" if self.max_p99_ratio <= 0 else "min_labeled",
            )


@dataclass(frozen=True, slots=True)
class Check:
    """One rule's outcome, with the figure it read and the limit it held it to."""

    rule: str
    status: Status
    detail: str
    figure: float | None = None
    limit: float | None = None


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """Every rule's check; ``status`` fail if any failed, else pending if any waits, else pass."""

    checks: tuple[Check, ...]

    @property
    def status(self) -> Status:
        states = {check.status for check in self.checks}
        return "fail" if "fail" in states else "pending" if "pending" in states else "pass"

    def reasons(self, *only: Status) -> list[str]:
        return [c.detail for c in self.checks if not only or c.status in only]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "checks": [asdict(check) for check in self.checks]}


def judge(found: Comparison, rules: GateRules) -> GateVerdict:
    """The live gate's verdict on one comparison."""
    return GateVerdict(
        (
            _agreement(found, rules),
            _gain(found, rules),
            _flags(found, rules),
            _latency(found, rules),
            _errors(found, rules),
        )
    )


def _agreement(found: Comparison, rules: GateRules) -> Check:
    if found.agreement is None:
        return Check(
            "agreement", "pass", f"agreement: not measured for a {found.mode} of a {found.task} task"
        )
    ok = found.agreement >= rules.min_agreement
    detail = (
        f"agreement {found.agreement:.1%} on {found.paired_rows} paired rows "
        f"{'≥' if ok else '<'} {rules.min_agreement:.1%}"
    )
    return Check("agreement", "pass" if ok else "fail", detail, found.agreement, rules.min_agreement)


def _gain(found: Comparison, rules: GateRules) -> Check:
    gain, metric = found.gain, found.metric
    if gain is None or metric is None or found.labeled_rows < rules.min_labeled:
        detail = (
            f"metric gain: {found.labeled_rows} labeled rows of the {rules.min_labeled} needed; "
            "waiting for labels"
        )
        return Check("metric_gain", "pending", detail, None, rules.min_gain)
    if gain.value is None or gain.low is None:
        return Check(
            "metric_gain", "pending", f"metric gain: {metric} undefined on the labeled rows (one class?)"
        )
    ok = gain.value >= rules.min_gain and gain.low > 0
    detail = (
        f"{metric} gain {gain.value:+.4f} [{gain.low:+.4f}, {gain.high:+.4f}] on {found.labeled_rows} "
        f"labeled rows: {'clears' if ok else 'does not clear'} the margin {rules.min_gain:g} with its "
        "interval above zero"
    )
    return Check("metric_gain", "pass" if ok else "fail", detail, gain.value, rules.min_gain)


def _flags(found: Comparison, rules: GateRules) -> Check:
    champion, candidate = found.champion.flag_rates, found.candidate.flag_rates
    excess = {kind: rate - champion.get(kind, 0.0) for kind, rate in candidate.items()}
    worst = max(excess, key=excess.__getitem__, default=None)
    if worst is None or excess[worst] <= 0:
        detail = "skew flags: the candidate raises no kind more often than the champion"
        return Check("skew_flags", "pass", detail, 0.0, rules.max_new_flag_rate)
    if excess[worst] <= rules.max_new_flag_rate:
        detail = (
            f"skew flags: {worst} {excess[worst]:+.1%} of the rows above the champion at most, within "
            f"{rules.max_new_flag_rate:.1%}"
        )
        return Check("skew_flags", "pass", detail, excess[worst], rules.max_new_flag_rate)
    detail = (
        f"skew flags: the candidate raises {worst} on {candidate[worst]:.1%} of its rows against the "
        f"champion's {champion.get(worst, 0.0):.1%}, more than {rules.max_new_flag_rate:.1%} above"
    )
    return Check("skew_flags", "fail", detail, excess[worst], rules.max_new_flag_rate)


def _latency(found: Comparison, rules: GateRules) -> Check:
    mine, theirs = found.champion.latency_p99_ms, found.candidate.latency_p99_ms
    if mine is None or theirs is None or mine <= 0:
        return Check("latency_p99", "pending", "latency: no p99 logged for one of them yet")
    ratio = theirs / mine
    ok = ratio <= rules.max_p99_ratio
    detail = (
        f"latency p99 {theirs:.2f} ms vs the champion's {mine:.2f} ms: {ratio:.2f}× "
        f"{'≤' if ok else '>'} {rules.max_p99_ratio:g}×"
    )
    return Check("latency_p99", "pass" if ok else "fail", detail, ratio, rules.max_p99_ratio)


def _errors(found: Comparison, rules: GateRules) -> Check:
    given = found.candidate.requests + found.candidate.errors
    rate = found.candidate.errors / given if given else 0.0
    ok = rate <= rules.max_error_rate
    detail = (
        f"errors: the candidate failed {found.candidate.errors} of {given} requests ({rate:.2%}), "
        f"{'within' if ok else 'above'} {rules.max_error_rate:.2%}"
    )
    return Check("errors", "pass" if ok else "fail", detail, rate, rules.max_error_rate)
