"""The live gate's rules as pure policy: a comparison in, pass / fail / pending with each rule's figures."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from skewguard.errors import ConfigError
from skewguard.monitoring.comparison import Comparison, VariantFigures
from skewguard.monitoring.scoring import Estimate
from skewguard.pipeline.gate import GateRules, LivePeriod, judge, parse_period


def _figures(**changes: Any) -> VariantFigures:
    values: dict[str, Any] = {
        "version": "cascade-c:v",
        "rows": 2_000,
        "requests": 2_000,
        "routes": {"a": 0.6, "b": 0.4},
        "latency_p50_ms": 1.0,
        "latency_p99_ms": 4.0,
        "flag_rates": {"out_of_range": 0.02},
        "errors": 0,
        **changes,
    }
    return VariantFigures(**values)


def _comparison(**changes: Any) -> Comparison:
    values: dict[str, Any] = {
        "cascade": "c",
        "mode": "shadow",
        "task": "classification",
        "window": (0.0, 1.0),
        "champion": _figures(),
        "candidate": _figures(),
        "paired_rows": 2_000,
        "agreement": 0.9,
        "differences": None,
        "distance": {"jensen_shannon_labels": 0.01},
        "metric": "roc_auc",
        "labeled_rows": 2_000,
        "gain": Estimate(0.03, 0.01, 0.05, 2_000),
        **changes,
    }
    return Comparison(**values)


def test_a_better_candidate_passes_every_rule() -> None:
    verdict = judge(_comparison(), GateRules())
    assert verdict.status == "pass"
    assert [c.rule for c in verdict.checks] == [
        "agreement",
        "metric_gain",
        "skew_flags",
        "latency_p99",
        "errors",
    ]
    assert verdict.to_dict()["checks"][1]["figure"] == 0.03


@pytest.mark.parametrize(
    ("changes", "rule", "words"),
    [
        ({"agreement": 0.6}, "agreement", "agreement 60.0%"),
        (
            {"gain": Estimate(0.03, -0.01, 0.07, 2_000)},
            "metric_gain",
            "does not clear",
        ),  # interval not above 0
        ({"gain": Estimate(0.004, 0.001, 0.007, 2_000)}, "metric_gain", "does not clear the margin 0.005"),
        (
            {"candidate": _figures(flag_rates={"out_of_range": 0.02, "unseen_category": 0.05})},
            "skew_flags",
            "unseen_category",
        ),
        ({"candidate": _figures(latency_p99_ms=8.0)}, "latency_p99", "2.00×"),
        ({"candidate": _figures(errors=50)}, "errors", "failed 50 of 2050"),
    ],
)
def test_each_rule_refuses_on_its_own(changes: dict[str, Any], rule: str, words: str) -> None:
    verdict = judge(_comparison(**changes), GateRules(min_gain=0.005))
    assert verdict.status == "fail"
    failed = [c for c in verdict.checks if c.status == "fail"]
    assert [c.rule for c in failed] == [rule]
    assert words in failed[0].detail


def test_a_flag_the_champion_raises_as_often_is_no_new_flag() -> None:
    both = {"unseen_category": 0.3}
    verdict = judge(
        _comparison(champion=_figures(flag_rates=both), candidate=_figures(flag_rates=both)), GateRules()
    )
    assert verdict.status == "pass"


def test_too_few_labels_waits_rather_than_refuses_but_a_failure_still_refuses() -> None:
    waiting = judge(_comparison(labeled_rows=50), GateRules(min_labeled=200))
    assert waiting.status == "pending"
    assert waiting.reasons("pending") == [
        "metric gain: 50 labeled rows of the 200 needed; waiting for labels"
    ]
    unlabeled = judge(_comparison(metric=None, gain=None, labeled_rows=0), GateRules())
    assert unlabeled.status == "pending"
    slow = judge(
        _comparison(labeled_rows=50, candidate=_figures(latency_p99_ms=40.0)), GateRules(min_labeled=200)
    )
    assert slow.status == "fail"


def test_agreement_does_not_apply_to_a_canary_or_a_regression() -> None:
    canary = judge(_comparison(mode="canary", agreement=None, paired_rows=0), GateRules(min_agreement=0.99))
    assert canary.status == "pass"
    assert "not measured for a canary" in canary.checks[0].detail
    regression = dataclasses.replace(_comparison(), task="regression", agreement=None, metric="mae")
    assert judge(regression, GateRules(min_agreement=0.99)).status == "pass"


def test_live_periods_are_requests_or_durations() -> None:
    assert parse_period("2000") == LivePeriod(requests=2_000)
    assert parse_period("90s") == LivePeriod(seconds=90.0)
    assert parse_period("2h") == LivePeriod(seconds=7_200.0)
    assert parse_period("1d").is_complete(requests=0, elapsed=86_400.0)
    assert not parse_period("2000").is_complete(requests=1_999, elapsed=1e9)
    for bad in ("", "0", "-5", "2 weeks", "1.5"):
        with pytest.raises(ConfigError) as caught:
            parse_period(bad)
        assert caught.value.field == "period"


def test_rules_out_of_range_are_config_errors_naming_the_rule() -> None:
    with pytest.raises(ConfigError) as caught:
        GateRules(min_agreement=1.5)
    assert caught.value.field == "min_agreement"
    with pytest.raises(ConfigError) as caught:
        GateRules(max_p99_ratio=0)
    assert caught.value.field == "max_p99_ratio"
