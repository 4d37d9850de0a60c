"""The cascade: branches learn from the router's own out-of-fold routing, judged end to end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns_data import generate_demo_data
from returns_models import TIMESTAMP, feature_columns, make_pipeline, split_by_time, training_frame
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression

from skewguard.bentos.manifest import RouterRef
from skewguard.errors import ConfigError
from skewguard.pipeline.cascade import (
    RoutingRule,
    TrainedCascade,
    choose_rule,
    evaluate,
    fit_branches,
    out_of_fold_proba,
    route,
    score,
    time_blocks,
)

N_SPLITS = 3
ROUTES = {"1": "reseller", "0": "retail"}


def router_factory() -> Any:
    return make_pipeline("rf", seed=0)


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_by_time(training_frame(generate_demo_data(n_orders=3_000, n_customers=300, seed=3)))


@pytest.fixture(scope="module")
def oof(frames: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[np.ndarray, tuple[Any, ...]]:
    train, _ = frames
    return out_of_fold_proba(
        router_factory, train[feature_columns()], train["is_reseller"], train[TIMESTAMP], N_SPLITS
    )


@pytest.fixture(scope="module")
def trained(frames: tuple[pd.DataFrame, pd.DataFrame], oof: Any) -> TrainedCascade:
    train, _ = frames
    X = train[feature_columns()]
    rule = choose_rule(ROUTES, 0.5, "1")
    routed = rule.assign(*oof)
    targets = {branch: train["returned"] for branch in ("reseller", "retail")}
    factories = {branch: router_factory for branch in ("reseller", "retail")}
    branches = fit_branches(X, targets, routed, factories, "classification")
    return TrainedCascade(rule, router_factory().fit(X, train["is_reseller"]), branches)


class _Recorder:
    """A branch model that remembers which rows it was fitted on."""

    def __init__(self, seen: list[pd.Index]) -> None:
        self.seen = seen

    def fit(self, X: pd.DataFrame, y: Any) -> _Recorder:
        self.seen.append(X.index)
        return self


def test_branch_models_are_fitted_on_the_out_of_fold_routed_rows(
    frames: tuple[pd.DataFrame, pd.DataFrame], oof: Any
) -> None:
    train, _ = frames
    X = train[feature_columns()]
    routed = choose_rule(ROUTES, 0.5, "1").assign(*oof)
    seen: list[pd.Index] = []
    factories = {branch: (lambda: _Recorder(seen)) for branch in ("reseller", "retail")}
    fit_branches(X, dict.fromkeys(factories, train["returned"]), routed, factories, "classification")
    reseller_rows, retail_rows = seen
    assert list(reseller_rows) == list(X.index[routed == "reseller"])
    assert list(retail_rows) == list(X.index[routed == "retail"])
    truth = train["is_reseller"].to_numpy() == 1
    misrouted = int(((routed == "reseller") != truth).sum())
    assert 0 < misrouted < len(truth) // 4  # a good router, yet not the true split


def test_out_of_fold_routing_shows_misroutes_that_in_sample_routing_hides(
    frames: tuple[pd.DataFrame, pd.DataFrame], trained: TrainedCascade, oof: Any
) -> None:
    train, _ = frames
    truth = np.where(train["is_reseller"].to_numpy() == 1, "reseller", "retail")
    in_sample = route(trained, train[feature_columns()])
    out_of_fold = choose_rule(ROUTES, 0.5, "1").assign(*oof)
    assert (in_sample != truth).sum() < (out_of_fold != truth).sum()


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


def test_a_fixed_threshold_and_its_reason_are_kept() -> None:
    rule = choose_rule({1: "reseller", 0: "retail"}, 0.4, None)  # YAML keys may be numbers
    assert (rule.threshold, rule.positive_class) == (0.4, "1")  # the greater class by default
    assert "fixed" in rule.reason
    top = choose_rule(ROUTES, None, None)
    assert (top.threshold, top.positive_class) == (None, None)


def test_max_f1_threshold_maximises_f1_on_out_of_fold_probabilities() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(np.int64)
    p1 = np.clip(0.25 * y + rng.normal(0.3, 0.15, 400), 0.001, 0.999)
    proba = np.column_stack([1 - p1, p1])
    chosen = choose_rule(ROUTES, "max_f1", "1", y, (proba, (0, 1)))

    def f1(cut: float) -> float:
        hit = p1 >= cut
        tp = int((hit & (y == 1)).sum())
        return 2 * tp / (int(hit.sum()) + int(y.sum()))

    assert chosen.threshold is not None
    assert f1(chosen.threshold) == pytest.approx(max(f1(cut) for cut in np.unique(p1)))
    assert chosen.threshold != 0.5
    assert "out-of-fold" in chosen.reason


@given(
    proba=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
    threshold=st.floats(0.01, 0.99),
    positive=st.sampled_from(["a", "b"]),
)
def test_training_routes_every_row_as_the_served_manifest_does(
    proba: list[float], threshold: float, positive: str
) -> None:
    """The rule training fits the branches with and the rule the gateway serves agree, row for row."""
    total = sum(proba) or 1.0
    row = np.asarray([p / total for p in proba])
    three = {"a": "x", "b": "y", "c": "y"}
    served = RouterRef(tag="r:v1", routes=three).choose(dict(zip(three, row.tolist(), strict=True)))
    assert RoutingRule(three).assign(row[None, :], ["a", "b", "c"])[0] == served[0]
    two = {"a": "x", "b": "y"}
    pair = np.asarray([row[0], 1 - row[0]])
    rule = RouterRef(tag="r:v1", routes=two, threshold=threshold, positive_class=positive)
    trained = RoutingRule(two, threshold, positive).assign(pair[None, :], ["a", "b"])[0]
    assert trained == rule.choose(dict(zip(two, pair.tolist(), strict=True)))[0]


def test_a_router_of_three_classes_routes_to_two_branches() -> None:
    rng = np.random.default_rng(1)
    proba = rng.dirichlet([1, 1, 1], 300)
    rule = choose_rule({"small": "short", "medium": "short", "large": "long"}, None, None)
    routed = rule.assign(proba, ["large", "medium", "small"])
    np.testing.assert_array_equal(routed == "long", proba.argmax(axis=1) == 0)
    with pytest.raises(ConfigError, match="two classes"):
        choose_rule({"small": "short", "medium": "short", "large": "long"}, 0.5, "large")
    with pytest.raises(ConfigError, match="do not map") as unknown:
        RoutingRule({"small": "short", "large": "long"}).assign(proba, ["large", "medium", "small"])
    assert unknown.value.field == "router.routes"


def test_regression_branches_are_scored_by_error_and_need_two_rows() -> None:
    X = pd.DataFrame({"x": np.arange(40.0)})
    y = 3.0 * X["x"].to_numpy() + 1.0
    routed = np.where(X["x"] < 20, "low", "high").astype(np.str_)
    models = fit_branches(
        X, {"low": y, "high": y}, routed, {"low": LinearRegression, "high": DummyRegressor}, "regression"
    )
    cascade = TrainedCascade(None, None, {"all": models["low"]})
    figures = evaluate(cascade, X, {"all": y}, "regression", monolithic=DummyRegressor().fit(X, y))
    assert figures["cascade"]["overall"]["mae"] == pytest.approx(0.0, abs=1e-9)
    assert figures["cascade"]["overall"]["r2"] == pytest.approx(1.0)
    assert figures["monolithic"]["overall"]["mae"] > 10
    one_row = np.array(["low"] + ["high"] * 39, dtype=np.str_)
    with pytest.raises(ConfigError, match="'low' got 1 training rows") as few:
        fit_branches(
            X,
            {"low": y, "high": y},
            one_row,
            {"low": LinearRegression, "high": LinearRegression},
            "regression",
        )
    assert few.value.field == "branches.low"


def test_evaluation_reports_three_systems_on_the_held_out_slice(
    frames: tuple[pd.DataFrame, pd.DataFrame], trained: TrainedCascade
) -> None:
    train, holdout = frames
    X = holdout[feature_columns()].reset_index(drop=True)
    truth = np.where(holdout["is_reseller"].to_numpy() == 1, "reseller", "retail")
    targets = {branch: holdout["returned"].to_numpy() for branch in ("reseller", "retail")}
    monolithic = router_factory().fit(train[feature_columns()], train["returned"])
    figures = evaluate(
        trained,
        X,
        targets,
        "classification",
        monolithic=monolithic,
        true_label=trained.branches,
        true_routes=truth,
    )
    assert holdout[TIMESTAMP].min() >= train[TIMESTAMP].max()
    systems = [figures[name] for name in ("cascade", "monolithic", "true_label_cascade")]
    for system in systems:
        assert system["overall"]["n_rows"] == len(holdout)
        assert sum(branch["n_rows"] for branch in system["branches"].values()) == len(holdout)
        assert 0.5 < system["overall"]["roc_auc"] <= 1.0
        assert 0.0 < system["overall"]["log_loss"] < 1.0
        assert set(system["branches"]) == {"reseller", "retail"}
    # All are split by the same routing, so the branch figures compare like with like.
    assert len({tuple(b["n_rows"] for b in s["branches"].values()) for s in systems}) == 1
    assert figures["cascade"]["branches"]["reseller"]["n_rows"] == pytest.approx(
        figures["routing"]["share"]["reseller"] * len(holdout)
    )
    assert 0.8 < figures["routing"]["accuracy"] <= 1.0
    json.dumps(figures, allow_nan=False)  # ready for the manifest


def test_scores_of_a_classifier_name_its_classes() -> None:
    answers = pd.DataFrame(
        {"prediction": [1, 0, 1, 1], "proba_0": [0.2, 0.9, 0.4, 0.1], "proba_1": [0.8, 0.1, 0.6, 0.9]}
    )
    figures = score(np.array([1, 0, 0, 1]), answers, "classification")
    assert figures["accuracy"] == 0.75
    assert figures["roc_auc"] == 1.0
    assert figures["positive_rate"] == 0.5


def test_invalid_inputs_are_refused_with_the_field_named(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = frames
    X = train[feature_columns()].iloc[:200]
    with pytest.raises(ConfigError, match=r"\(0, 1\)") as threshold:
        choose_rule(ROUTES, 1.5, "1")
    assert threshold.value.field == "router.threshold"
    with pytest.raises(ConfigError, match="one class") as single:
        out_of_fold_proba(router_factory, X, np.full(200, 2), train[TIMESTAMP].iloc[:200], N_SPLITS)
    assert single.value.field == "router.target"
    all_retail = np.full(200, "retail", dtype=np.str_)
    with pytest.raises(ConfigError, match="'reseller' got 0 training rows with a single class"):
        fit_branches(
            X,
            dict.fromkeys(("reseller", "retail"), train["returned"].iloc[:200]),
            all_retail,
            dict.fromkeys(("reseller", "retail"), router_factory),
            "classification",
        )
