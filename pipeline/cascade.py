"""The Cascade: a router picks a branch per row; the chain is trained and judged as one unit.

The router learns a column of its own (a segment of the rows that behaves apart); its rule
turns each row's class probabilities into a branch: above a threshold on one class's
probability (two classes), or the most probable class (any number), each class mapped to a
branch. Each branch's model is fitted on the rows the router's *out-of-fold* predictions
send it — the rows it will see in serving, misroutes included — not on the true routing
label, which serving never knows. Evaluation runs on a held-out time slice end to end
(router → chosen branch), beside a monolithic model and, when the routing label is known,
beside a cascade whose branches were fitted on the true routes, all split by the same
routing. A cascade without a router is its one model.

Pure training and evaluation on an already joined training frame: no I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    precision_recall_curve,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import cross_val_predict

from skewguard.bentos.classes import native
from skewguard.errors import ConfigError

Factory = Callable[[], Any]
Task = Literal["classification", "regression"]
ThresholdChoice = float | Literal["max_f1"] | None
DEFAULT_REASON = "the router's most probable class"
MIN_REGRESSION_ROWS = 2


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """How router probabilities become branches — the same rule the served manifest applies.

    ``routes`` maps each router class (as JSON renders it) to a branch; with ``threshold``
    (two classes), P(``positive_class``) >= threshold routes to the positive class's branch.
    """

    routes: Mapping[str, str]
    threshold: float | None = None
    positive_class: str | None = None
    reason: str = DEFAULT_REASON

    @property
    def branches(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.routes.values()))

    def assign(self, proba: NDArray[np.float64], classes: Sequence[Any]) -> NDArray[np.str_]:
        """The branch of each row from the router's probabilities (columns in ``classes`` order)."""
        keys = [class_key(c) for c in classes]
        unknown = [k for k in keys if k not in self.routes]
        if unknown:
            raise ConfigError(
                f"The router predicts classes {unknown} that the routes do not map to a branch; "
                f"routes cover {sorted(self.routes)}.",
                field="router.routes",
            )
        if self.threshold is None:
            top = np.asarray(keys, dtype=object)[np.argmax(proba, axis=1)]
            return np.array([self.routes[k] for k in top], dtype=np.str_)
        positive = str(self.positive_class)
        negative = next(k for k in self.routes if k != positive)
        above = proba[:, keys.index(positive)] >= self.threshold
        return np.where(above, self.routes[positive], self.routes[negative]).astype(np.str_)


@dataclass(frozen=True, slots=True)
class TrainedCascade:
    """The fitted models of one training run and how it routes."""

    rule: RoutingRule | None
    router: Any
    branches: Mapping[str, Any]


def class_key(value: Any) -> str:
    """A class label as the served answer's probabilities name it (JSON-native, then text)."""
    return str(native(value))


def time_blocks(times: pd.Series, n_splits: int) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    """K contiguous time blocks, each predicted by a model fitted on the others.

    Not shuffled folds: rows close in time share feature snapshots, and shuffling puts such
    near-duplicates on both sides, so out-of-fold routing would look better than serving's.
    """
    if not 2 <= n_splits <= len(times):
        raise ConfigError(
            f"n_splits is {n_splits}; expected 2 <= n_splits <= {len(times)} (the rows).",
            field="router.n_splits",
        )
    order = np.argsort(times.to_numpy(), kind="stable")
    blocks = np.array_split(order, n_splits)
    return [
        (np.concatenate([b for j, b in enumerate(blocks) if j != i]), block) for i, block in enumerate(blocks)
    ]


def out_of_fold_proba(
    factory: Factory, X: pd.DataFrame, y: Any, times: pd.Series, n_splits: int = 5
) -> tuple[NDArray[np.float64], tuple[Any, ...]]:
    """Every row's router probabilities from a router that never saw its time block, and the classes."""
    classes = tuple(np.unique(np.asarray(y)))
    if len(classes) < 2:
        raise ConfigError(
            f"The router's target has one class ({classes}); it needs two or more.", field="router.target"
        )
    proba = cross_val_predict(factory(), X, y, cv=time_blocks(times, n_splits), method="predict_proba")
    return np.asarray(proba, dtype=np.float64), classes  # columns follow the sorted classes


def choose_rule(
    routes: Mapping[str, str],
    threshold: ThresholdChoice,
    positive_class: str | None,
    y: Any = None,
    oof: tuple[NDArray[np.float64], Sequence[Any]] | None = None,
) -> RoutingRule:
    """The routing rule: most probable class, a fixed threshold, or the one maximising F1 out of fold."""
    routes = {str(k): v for k, v in routes.items()}
    if threshold is None:
        return RoutingRule(routes)
    if len(routes) != 2:
        raise ConfigError(
            f"A threshold needs a router of two classes; the routes map {len(routes)}.",
            field="router.threshold",
        )
    positive = str(positive_class) if positive_class is not None else sorted(routes)[-1]
    if positive not in routes:
        raise ConfigError(
            f"positive_class {positive!r} is not a routed class ({sorted(routes)}).",
            field="router.positive_class",
        )
    if threshold != "max_f1":
        value = float(threshold)
        if not 0.0 < value < 1.0:
            raise ConfigError(f"The routing threshold is {value}; expected (0, 1).", field="router.threshold")
        return RoutingRule(routes, value, positive, f"P({positive}) >= {value:g}, fixed in the cascade file")
    if y is None or oof is None:
        raise ConfigError("threshold 'max_f1' needs the labels and the out-of-fold probabilities.")
    proba, classes = oof
    column = [class_key(c) for c in classes].index(positive)
    is_positive = np.array([class_key(v) == positive for v in np.asarray(y)])
    precision, recall, cuts = precision_recall_curve(is_positive, proba[:, column])
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    reason = f"maximises the F1 of class {positive} ({f1[best]:.4f}) on out-of-fold router predictions"
    return RoutingRule(routes, float(min(max(cuts[best], 1e-9), 1 - 1e-9)), positive, reason)


def fit_branches(
    X: pd.DataFrame,
    targets: Mapping[str, Any],
    routed: NDArray[np.str_],
    factories: Mapping[str, Factory],
    task: Task,
) -> dict[str, Any]:
    """One model per branch, each fitted on the rows ``routed`` sends it, on its own target."""
    if len(routed) != len(X):
        raise ConfigError(f"The routing covers {len(routed)} rows; X has {len(X)}. Route the same rows.")
    models = {}
    for branch, factory in factories.items():
        rows = routed == branch
        y = np.asarray(targets[branch])[rows]
        _check_branch_rows(branch, y, task)
        models[branch] = factory().fit(X.loc[rows], y)
    return models


def _check_branch_rows(branch: str, y: NDArray[Any], task: Task) -> None:
    if task == "classification" and len(np.unique(y)) < 2:
        raise ConfigError(
            f"Branch {branch!r} got {len(y)} training rows with a single class; its model needs two or "
            "more. Use more data, another threshold or other routes.",
            field=f"branches.{branch}",
        )
    if task == "regression" and len(y) < MIN_REGRESSION_ROWS:
        raise ConfigError(
            f"Branch {branch!r} got {len(y)} training rows; its model needs at least {MIN_REGRESSION_ROWS}.",
            field=f"branches.{branch}",
        )


def route(cascade: TrainedCascade, X: pd.DataFrame) -> NDArray[np.str_]:
    """The branch of each row, as the fitted router and its rule choose it."""
    if cascade.router is None or cascade.rule is None:
        return np.full(len(X), next(iter(cascade.branches)), dtype=object).astype(np.str_)
    proba = np.asarray(cascade.router.predict_proba(X), dtype=np.float64)
    return cascade.rule.assign(proba, cascade.router.classes_)


def predict(models: Mapping[str, Any], X: pd.DataFrame, routed: NDArray[np.str_], task: Task) -> pd.DataFrame:
    """Each row's answer from its branch's model: ``prediction`` and, for classifiers, ``proba_<class>``."""
    frames = []
    for branch, model in models.items():
        rows = np.flatnonzero(routed == branch)
        if rows.size == 0:
            continue
        part = X.iloc[rows]
        answer = pd.DataFrame({"prediction": model.predict(part)}, index=rows)
        if task == "classification":
            proba = np.asarray(model.predict_proba(part), dtype=np.float64)
            for j, cls in enumerate(model.classes_):
                answer[f"proba_{class_key(cls)}"] = proba[:, j]
        frames.append(answer)
    return pd.concat(frames).sort_index() if frames else pd.DataFrame({"prediction": []})


def score(y: Any, answers: pd.DataFrame, task: Task) -> dict[str, float | int | None]:
    """How well ``answers`` fit the labels ``y``: MAE, RMSE, R² or accuracy, log loss, ROC AUC."""
    y = np.asarray(y)
    if len(y) == 0:
        return {"n_rows": 0}
    if task == "regression":
        predicted = answers["prediction"].to_numpy(dtype=np.float64)
        return {
            "n_rows": len(y),
            "mae": float(mean_absolute_error(y, predicted)),
            "rmse": float(math.sqrt(np.mean((y - predicted) ** 2))),
            "r2": float(r2_score(y, predicted)) if len(y) > 1 else None,
        }
    return _classification_scores(y, answers)


def _classification_scores(y: NDArray[Any], answers: pd.DataFrame) -> dict[str, float | int | None]:
    keys = [class_key(v) for v in y]
    columns = sorted(c for c in answers.columns if c.startswith("proba_"))
    classes = [c.removeprefix("proba_") for c in columns]
    proba = answers[columns].fillna(0.0).to_numpy(dtype=np.float64)
    figures: dict[str, float | int | None] = {
        "n_rows": len(y),
        "accuracy": float(accuracy_score(keys, [class_key(p) for p in answers["prediction"]])),
    }
    if set(keys) <= set(classes):
        figures["log_loss"] = float(log_loss(keys, np.clip(proba, 1e-15, 1.0), labels=classes))
    if len(classes) == 2 and len(set(keys)) == 2:
        figures["roc_auc"] = float(roc_auc_score([k == classes[1] for k in keys], proba[:, 1]))
        figures["positive_rate"] = float(np.mean([k == classes[1] for k in keys]))
    return figures


def system_figures(
    y: Mapping[str, Any], answers: pd.DataFrame, routed: NDArray[np.str_], task: Task
) -> dict[str, Any]:
    """Scores over all held-out rows (when the branches share one target) and per routed branch."""
    per_branch = {
        branch: score(np.asarray(target)[routed == branch], answers.loc[routed == branch], task)
        for branch, target in y.items()
    }
    targets = [np.asarray(t) for t in y.values()]
    shared = all(t is targets[0] or np.array_equal(t, targets[0]) for t in targets)
    overall = score(targets[0], answers, task) if shared else None
    return {"overall": overall, "branches": per_branch}


def evaluate(
    cascade: TrainedCascade,
    X: pd.DataFrame,
    y: Mapping[str, Any],
    task: Task,
    *,
    monolithic: Any = None,
    true_label: Mapping[str, Any] | None = None,
    true_routes: NDArray[np.str_] | None = None,
) -> dict[str, Any]:
    """The cascade end to end on held-out rows, beside the comparisons, all split by one routing.

    ``y`` holds each branch's target on these rows; ``true_label`` the branch models fitted
    on the true routes; ``true_routes`` the branch each row's true routing label sends it to.
    """
    routed = route(cascade, X)  # one routing splits every system's branch figures
    figures: dict[str, Any] = {
        "cascade": system_figures(y, predict(cascade.branches, X, routed, task), routed, task)
    }
    if monolithic is not None:
        everywhere = np.full(len(X), "all", dtype=object).astype(np.str_)
        answers = predict({"all": monolithic}, X, everywhere, task)
        figures["monolithic"] = system_figures(y, answers, routed, task)
    if true_label is not None:
        figures["true_label_cascade"] = system_figures(y, predict(true_label, X, routed, task), routed, task)
    shares = {branch: float(np.mean(routed == branch)) if len(routed) else 0.0 for branch in cascade.branches}
    figures["routing"] = {"share": shares}
    if true_routes is not None and len(routed):
        figures["routing"]["accuracy"] = float(np.mean(routed == true_routes))
    return figures
