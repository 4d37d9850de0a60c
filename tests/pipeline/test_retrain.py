"""The retrain flow's decisions as pure rules (the end-to-end run is tests/pipeline/test_scenario.py)."""

from __future__ import annotations

from typing import Any

import pytest

from skewguard.errors import ConfigError
from skewguard.pipeline.retrain import beats, no_retrain_reason, scheduled_deployment


def _figures(champion: float | None, candidate: float | None, metric: str = "roc_auc") -> dict[str, Any]:
    return {
        "metric": metric,
        "window": {"rows": 100},
        "champion": {metric: champion},
        "candidate": {metric: candidate},
    }


@pytest.mark.parametrize(
    ("champion", "candidate", "margin", "expected"),
    [
        (0.80, 0.81, 0.005, True),
        (0.80, 0.804, 0.005, False),
        (0.80, 0.805, 0.005, True),  # exactly the margin counts
        (0.80, 0.79, 0.0, False),
        (0.80, 0.80, 0.0, True),
    ],
)
def test_the_candidate_must_beat_the_champion_by_the_margin(
    champion: float, candidate: float, margin: float, expected: bool
) -> None:
    better, why = beats(_figures(champion, candidate), margin)
    assert better is expected
    assert ("does not beat" in why) is (not expected)
    assert f"{candidate:.4f}" in why


@pytest.mark.parametrize("metric", ["log_loss", "mae", "rmse"])
def test_for_losses_and_errors_lower_is_better(metric: str) -> None:
    assert beats(_figures(0.50, 0.40, metric), 0.05)[0] is True
    assert beats(_figures(0.40, 0.50, metric), 0.0)[0] is False


def test_for_r2_higher_is_better() -> None:
    assert beats(_figures(0.50, 0.60, "r2"), 0.05)[0] is True


def test_an_undefined_score_never_promotes() -> None:
    better, why = beats(_figures(None, 0.9), 0.0)
    assert better is False
    assert "undefined" in why


@pytest.mark.parametrize(
    ("verdict", "retrain"),
    [
        ({"drift": None, "reasons": ["not enough data"]}, False),
        ({"drift": False, "reasons": ["0 of 14 columns drifted"]}, False),
        ({"drift": True, "reasons": ["overall: price drifted"]}, True),
        ({"drift": True, "reasons": ["feature skew: orders_30d served online differs"]}, False),
        ({"drift": True, "reasons": ["overall: price drifted", "feature skew: orders_30d"]}, True),
    ],
)
def test_only_drift_in_the_data_calls_for_a_new_model(verdict: dict[str, Any], retrain: bool) -> None:
    assert (no_retrain_reason(verdict) is None) is retrain


def test_the_flow_runs_on_a_cron_schedule_as_a_prefect_deployment() -> None:
    deployment = scheduled_deployment("0 * * * *", {"name": "returns", "margin": 0.01, "last": 1500})
    assert deployment.name == "retrain-returns"
    assert deployment.parameters == {"name": "returns", "margin": 0.01, "last": 1500}
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 * * * *"


def test_a_bad_cron_line_is_a_config_error_naming_the_schedule() -> None:
    with pytest.raises(ConfigError) as caught:
        scheduled_deployment("every hour", {"name": "returns"})
    assert caught.value.field == "schedule"
