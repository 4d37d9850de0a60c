"""The cascade: specialists learn from the router's own out-of-fold routing, judged end to end."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pytest
from returns_data import generate_demo_data
from returns_models import TIMESTAMP, feature_columns, make_pipeline, training_frame

from skewguard.errors import ConfigError
from skewguard.pipeline.cascade import (
    ROUTER_TARGET,
    TARGET,
    TrainedCascade,
    choose_threshold,
    fit_router,
    fit_specialists,
    out_of_fold_proba,
    route,
    route_out_of_fold,
    time_blocks,
    train_cascade_models,
)

N_SPLITS = 3
router_factory = partial(make_pipeline, "rf", seed=0)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return training_frame(generate_demo_data(n_orders=3_000, n_customers=300, seed=3))


@pytest.fixture(scope="module")
def trained(frame: pd.DataFrame) -> TrainedCascade:
    return train_cascade_models(frame, seed=0, head="rf", n_splits=N_SPLITS)


class _Recorder:
    """A specialist that remembers which rows it was fitted on."""

    def __init__(self, seen: list[pd.Index]) -> None:
        self.seen = seen

    def fit(self, X: pd.DataFrame, y: Any) -> _Recorder:
        self.seen.append(X.index)
        return self


def test_specialists_are_fitted_on_the_out_of_fold_routed_rows(trained: TrainedCascade) -> None:
    X, train = trained.train[feature_columns()], trained.train
    routed = route_out_of_fold(router_factory, X, train[ROUTER_TARGET], 0.5, n_splits=N_SPLITS)
    np.testing.assert_array_equal(routed, trained.routed)  # the run routed exactly these rows
    seen: list[pd.Index] = []
    fit_specialists(X, train[TARGET], routed, factory=lambda: _Recorder(seen))
    reseller_rows, retail_rows = seen
    assert list(reseller_rows) == list(X.index[routed])
    assert list(retail_rows) == list(X.index[~routed])
    truth = train[ROUTER_TARGET].to_numpy() == 1
    misrouted = int((routed != truth).sum())
    assert 0 < misrouted < len(truth) // 4  # a good router, yet not the true split
    assert set(reseller_rows) != set(X.index[truth])


def test_out_of_fold_routing_shows_misroutes_that_in_sample_routing_hides(trained: TrainedCascade) -> None:
    X = trained.train[feature_columns()]
    truth = trained.train[ROUTER_TARGET].to_numpy() == 1
    in_sample = route(trained.router.predict_proba(X)[:, 1], trained.threshold.value)
    assert (in_sample != truth).sum() < (trained.routed != truth).sum()


def test_time_blocks_predict_every_row_once_from_other_periods() -> None:
    order_ts = pd.Series(pd.to_datetime([5, 1, 4, 2, 3, 0, 7, 6], unit="D", utc=True))
    folds = time_blocks(order_ts, 3)
    predicted = np.concatenate([test for _, test in folds])
    assert sorted(predicted) == list(range(8))
    for train, test in folds:
        assert set(train).isdisjoint(test)
        assert len(train) + len(test) == 8
        days = sorted(order_ts.iloc[test].dt.day)
        assert days == list(range(days[0], days[0] + len(days)))  # one contiguous period
    with pytest.raises(ConfigError, match="n_splits"):
        time_blocks(order_ts, 1)


def test_threshold_choice_and_reason_are_stored(trained: TrainedCascade) -> None:
    assert trained.threshold.value == 0.5
    assert trained.threshold.rule == "fixed"
    assert "misroutes" in trained.threshold.reason
    assert trained.figures.routing.threshold == 0.5


def test_max_f1_threshold_maximises_f1_on_out_of_fold_probabilities() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(np.int64)
    proba = np.clip(0.25 * y + rng.normal(0.3, 0.15, 400), 0.001, 0.999)
    chosen = choose_threshold("max_f1", y, proba)

    def f1(cut: float) -> float:
        hit = proba >= cut
        tp = int((hit & (y == 1)).sum())
        return 2 * tp / (int(hit.sum()) + int(y.sum()))

    assert chosen.rule == "max_f1"
    assert f1(chosen.value) == pytest.approx(max(f1(cut) for cut in np.unique(proba)))
    assert chosen.value != 0.5
    assert "out-of-fold" in chosen.reason


def test_fit_router_with_max_f1_uses_the_given_out_of_fold_probabilities(frame: pd.DataFrame) -> None:
    X, y = frame[feature_columns()].iloc[:600], frame[ROUTER_TARGET].iloc[:600]
    oof = out_of_fold_proba(router_factory, X, y, n_splits=N_SPLITS)
    router, threshold = fit_router(X, y, factory=router_factory, threshold="max_f1", oof_proba=oof)
    assert threshold == choose_threshold("max_f1", y, oof)
    assert list(router.classes_) == [0, 1]


def test_evaluation_reports_three_systems_on_the_held_out_slice(trained: TrainedCascade) -> None:
    figures, holdout = trained.figures, trained.holdout
    assert holdout[TIMESTAMP].min() >= trained.train[TIMESTAMP].max()
    systems = (figures.cascade, figures.monolithic, figures.true_label_cascade)
    for system in systems:
        assert system.overall.n_rows == len(holdout)
        assert sum(branch.n_rows for branch in system.branches.values()) == len(holdout)
        assert 0.5 < (system.overall.roc_auc or 0.0) <= 1.0
        assert 0.0 < (system.overall.log_loss or 0.0) < 1.0
        assert 0.0 <= (system.overall.accuracy or -1.0) <= 1.0
        assert set(system.branches) == {"reseller", "retail"}
    # All three are split by the same routing, so the branch figures compare like with like.
    assert len({tuple(b.n_rows for b in s.branches.values()) for s in systems}) == 1
    assert len({s.overall.roc_auc for s in systems}) == 3  # three distinct models
    assert figures.cascade.branches["reseller"].n_rows == pytest.approx(
        figures.routing.routed_reseller_share * len(holdout)
    )
    assert 0.8 < figures.routing.accuracy <= 1.0
    json.dumps(figures.to_dict(), allow_nan=False)  # ready for the manifest


def test_invalid_inputs_are_refused_with_the_field_named(frame: pd.DataFrame) -> None:
    X = frame[feature_columns()].iloc[:200]
    with pytest.raises(ConfigError, match="probability"):
        choose_threshold(1.5)
    with pytest.raises(ConfigError, match=ROUTER_TARGET):
        fit_router(X, np.full(200, 2), factory=router_factory)
    all_retail = np.zeros(200, dtype=bool)
    with pytest.raises(ConfigError, match="reseller branch"):
        fit_specialists(X, frame[TARGET].iloc[:200], all_retail, factory=router_factory)
