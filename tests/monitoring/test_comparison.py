"""The live comparison as pure figures: logged records (and labels) in, champion vs candidate out."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from skewguard.errors import ConfigError
from skewguard.monitoring.comparison import compare_live, describe_comparison, find_candidate

CHAMPION, CANDIDATE = "cascade-c:champion", "cascade-c:candidate"


def _answer(p1: float, route: str, flags: list[str], latency: float) -> dict[str, Any]:
    return {
        "prediction": int(p1 >= 0.5),
        "probabilities": {"0": 1 - p1, "1": p1},
        "route": route,
        "flags": [{"kind": kind, "field": "x", "detail": ""} for kind in flags],
        "latency_ms": latency,
    }


def _record(i: int, answer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "request_id": f"r{i:05d}",
        "row": 0,
        "ts": 1_700_000_000.0 + i,
        "cascade": "c",
        "fields": {"customer_id": i},
        "versions": {"cascade": CHAMPION},
        "variant": "champion",
        "candidate": None,
        **{k: v for k, v in answer.items() if k != "latency_ms"},
        "latency_ms": answer["latency_ms"],
        **extra,
    }


def _shadowed(n: int, *, better: bool = True, seed: int = 1) -> tuple[list[dict[str, Any]], dict[Any, int]]:
    """``n`` rows whose true label the candidate ranks better than the champion (or equally)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    signal = y + rng.normal(0, 1.0, n)
    champion_p = 1 / (1 + np.exp(-(0.3 * signal + rng.normal(0, 1.0, n))))
    candidate_p = 1 / (1 + np.exp(-(2.0 * signal - 1.0))) if better else champion_p
    records, labels = [], {}
    for i in range(n):
        mine = _answer(
            float(champion_p[i]), "a" if i % 4 else "b", ["out_of_range"] if i % 10 == 0 else [], 1.0 + i % 5
        )
        theirs = _answer(
            float(candidate_p[i]), "a" if i % 2 else "b", ["unseen_category"] if i % 5 == 0 else [], 2.0
        )
        entry = {"variant": "shadow", "version": CANDIDATE} | theirs
        records.append(_record(i, mine, candidate=entry))
        labels[(f"r{i:05d}", 0)] = int(y[i])
    return records, labels


def test_a_better_shadow_shows_a_gain_whose_interval_is_above_zero() -> None:
    records, labels = _shadowed(2_000)
    found = compare_live(records, cascade="c", task="classification", labels=labels, resamples=300)
    assert (found.mode, found.champion.version, found.candidate.version) == ("shadow", CHAMPION, CANDIDATE)
    assert found.paired_rows == 2_000
    assert found.metric == "roc_auc"
    assert found.labeled_rows == 2_000
    assert found.gain is not None
    assert found.gain.low is not None
    assert found.gain.low > 0
    assert found.candidate.metric.value > found.champion.metric.value  # type: ignore[union-attr]
    assert found.champion.metric.low < found.champion.metric.value < found.champion.metric.high  # type: ignore[union-attr,operator]
    assert 0.0 < found.agreement < 1.0  # type: ignore[operator]


def test_the_per_variant_figures_are_counted_from_the_rows() -> None:
    records, _ = _shadowed(1_000)
    records.append(
        _record(
            5_000,
            _answer(0.4, "a", [], 1.0),
            candidate={"variant": "shadow", "version": CANDIDATE, "dropped": True},
        )
    )
    records.append(
        _record(
            5_001,
            _answer(0.4, "a", [], 1.0),
            candidate={
                "variant": "shadow",
                "version": CANDIDATE,
                "error": "upstream_timeout: slow",
                "latency_ms": 9.0,
            },
        )
    )
    found = compare_live(records, cascade="c", task="classification")
    champion, candidate = found.champion, found.candidate
    assert (champion.rows, candidate.rows) == (1_000, 1_000)
    assert champion.routes == {"a": 0.75, "b": 0.25}
    assert candidate.routes == {"a": 0.5, "b": 0.5}
    assert champion.flag_rates == {"out_of_range": 0.1}
    assert candidate.flag_rates == {"unseen_category": 0.2}
    assert (champion.latency_p50_ms, candidate.latency_p50_ms) == (3.0, 2.0)
    assert champion.latency_p99_ms == 5.0
    assert (candidate.errors, candidate.dropped) == (1, 1)
    assert found.metric is None  # no labels, no metric
    assert found.gain is None
    text = "\n".join(describe_comparison(found))
    assert "flag unseen_category" in text
    assert "no labels joined yet" in text


def test_a_candidate_identical_to_the_champion_agrees_everywhere_and_gains_nothing() -> None:
    records, labels = _shadowed(800, better=False)
    for record in records:
        record["candidate"] |= {k: record[k] for k in ("prediction", "probabilities", "route", "flags")}
    found = compare_live(records, cascade="c", task="classification", labels=labels, resamples=300)
    assert found.agreement == 1.0
    assert found.distance == {"jensen_shannon_labels": 0.0, "wasserstein_p1": 0.0}
    assert found.gain is not None
    assert found.gain.value == 0.0
    assert (found.gain.low, found.gain.high) == (0.0, 0.0)


def test_a_regression_shadow_reports_the_distribution_of_its_differences() -> None:
    records, labels = [], {}
    for i in range(500):
        champion = {"prediction": float(i % 50), "route": "short", "flags": [], "latency_ms": 1.0}
        candidate = {
            "variant": "shadow",
            "version": CANDIDATE,
            "prediction": float(i % 50) + 2.0,
            "route": "short",
            "flags": [],
            "latency_ms": 1.5,
        }
        records.append(_record(i, champion, candidate=candidate, probabilities=None))
        labels[(f"r{i:05d}", 0)] = float(i % 50) + 2.0  # the candidate is exactly right
    found = compare_live(records, cascade="c", task="regression", labels=labels, resamples=200)
    assert found.differences == {"mean": 2.0, "mean_abs": 2.0, "p5": 2.0, "p50": 2.0, "p95": 2.0}
    assert found.distance == {"wasserstein_prediction": pytest.approx(2.0)}
    assert found.metric == "mae"
    assert (found.champion.metric.value, found.candidate.metric.value) == (2.0, 0.0)  # type: ignore[union-attr]
    assert found.gain.value == 2.0  # type: ignore[union-attr]  # lower MAE is better: the gain is positive
    assert found.agreement is None


def test_a_canary_is_compared_as_two_samples_with_its_fallbacks_as_errors() -> None:
    rng = np.random.default_rng(3)
    records, labels = [], {}
    for i in range(1_200):
        y = int(rng.integers(0, 2))
        if i % 4 == 0:  # the canary's quarter: it is right more often
            p = 0.8 if y else 0.2
            records.append(
                _record(i, _answer(p, "b", [], 2.0), variant="canary", versions={"cascade": CANDIDATE})
            )
        else:
            p = float(rng.uniform(0.3, 0.7))
            records.append(_record(i, _answer(p, "a", [], 1.0)))
        labels[(f"r{i:05d}", 0)] = y
    records[1]["candidate"] = {
        "variant": "canary",
        "version": CANDIDATE,
        "error": "upstream_unavailable: down",
    }
    assert find_candidate(records) == (CANDIDATE, "canary")
    found = compare_live(records, cascade="c", task="classification", labels=labels, resamples=300)
    assert (found.mode, found.paired_rows, found.agreement) == ("canary", 0, None)
    assert (found.champion.rows, found.candidate.rows) == (900, 300)
    assert found.candidate.errors == 1
    assert found.candidate.routes == {"b": 1.0}
    assert found.gain.low > 0  # type: ignore[union-attr,operator]


def test_no_candidate_in_the_window_is_a_clear_error() -> None:
    records = [_record(i, _answer(0.3, "a", [], 1.0)) for i in range(10)]
    assert find_candidate(records) is None
    with pytest.raises(ConfigError) as caught:
        compare_live(records, cascade="c", task="classification")
    assert caught.value.field == "candidate"
    shadowed, _ = _shadowed(10)
    with pytest.raises(ConfigError, match="Metric 'auc'"):
        compare_live(shadowed, cascade="c", task="classification", metric="auc")


def test_only_the_cascades_own_records_and_the_named_candidate_count() -> None:
    records, labels = _shadowed(300)
    other = [r | {"cascade": "other"} for r in records[:50]]
    found = compare_live(
        records + other, cascade="c", task="classification", candidate=CANDIDATE, labels=labels, resamples=50
    )
    assert found.paired_rows == 300
    with pytest.raises(ConfigError):
        compare_live(records, cascade="c", task="classification", candidate="cascade-c:someone-else")


def test_the_figures_round_trip_through_json() -> None:
    import json

    from skewguard.monitoring.comparison import Comparison

    records, labels = _shadowed(300)
    found = compare_live(records, cascade="c", task="classification", labels=labels, resamples=50)
    assert Comparison.from_dict(json.loads(json.dumps(found.to_dict()))) == found


def test_the_same_rows_give_the_same_intervals_in_any_logged_order() -> None:
    records, labels = _shadowed(600)
    shuffled = [records[i] for i in np.random.default_rng(5).permutation(len(records))]
    first = compare_live(records, cascade="c", task="classification", labels=labels, resamples=200)
    again = compare_live(shuffled, cascade="c", task="classification", labels=labels, resamples=200)
    assert again.gain == first.gain
    assert again.candidate.metric == first.candidate.metric
