"""Exact ONNX conversion of scikit-learn's tree models: one ``TreeEnsemble`` (ai.onnx.ml 5).

scikit-learn's trees, forests and gradient boosting cast X to float32 and compare it with
float64 thresholds; HistGradientBoosting compares float64 X. The graph does the same:
``Cast(float32)`` then ``Cast(float64)`` where scikit-learn casts, and the thresholds as
they are, in float64 — so every comparison is the one scikit-learn makes, bit for bit.
Missing values follow each node's ``missing_go_to_left``; HistGradientBoosting's native
categorical splits become set-membership nodes on the category codes its own
``OrdinalEncoder`` would give (unknown categories are missing, as there).

Sums follow scikit-learn's order: each output starts from its baseline (a one-leaf tree
put first) and adds the trees in their order; a forest's per-tree probabilities are the
ones ``predict_proba`` of each tree returns, summed, then divided by the number of trees.
Labels come from the same quantity scikit-learn takes them from (the raw scores of
gradient boosting, the probabilities of a forest, the unnormalized leaf of a single tree).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from onnx import TensorProto, numpy_helper
from skl2onnx.common.data_types import (
    DoubleTensorType,
    Int64TensorType,
    StringTensorType,
)
from sklearn.preprocessing import FunctionTransformer

from skewguard.bentos.builder import GraphBuilder, set_double_output
from skewguard.bentos.encoders import category_codes, input_column
from skewguard.errors import ConversionError

ML_DOMAIN = "ai.onnx.ml"
BRANCH_LEQ = 0
BRANCH_MEMBER = 6
_LEAF = -1

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TreeArrays:
    """One tree, node by node: children (``-1`` at leaves), split feature, threshold, NaN side.

    ``members[i]`` holds the category codes that go left at a categorical node, else ``None``.
    """

    left: NDArray[np.intp]
    right: NDArray[np.intp]
    feature: NDArray[np.intp]
    threshold: FloatArray
    missing_left: NDArray[np.bool_]
    members: tuple[tuple[float, ...] | None, ...]


def sklearn_tree(tree: Any) -> TreeArrays:
    """The arrays of a fitted ``sklearn.tree._tree.Tree``."""
    n = tree.node_count
    missing = getattr(tree, "missing_go_to_left", np.zeros(n, dtype=np.uint8))
    return TreeArrays(
        left=np.asarray(tree.children_left, dtype=np.intp),
        right=np.asarray(tree.children_right, dtype=np.intp),
        feature=np.asarray(tree.feature, dtype=np.intp),
        threshold=np.asarray(tree.threshold, dtype=np.float64),
        missing_left=np.asarray(missing, dtype=bool),
        members=(None,) * n,
    )


def hist_tree(predictor: Any) -> TreeArrays:
    """The arrays of one HistGradientBoosting predictor (raw, not binned, thresholds)."""
    nodes = predictor.nodes
    leaf = nodes["is_leaf"].astype(bool)
    members: list[tuple[float, ...] | None] = []
    for node in nodes:
        if node["is_leaf"] or not node["is_categorical"]:
            members.append(None)
            continue
        bitset = predictor.raw_left_cat_bitsets[node["bitset_idx"]]
        codes = [float(c) for c in range(32 * len(bitset)) if bitset[c // 32] >> (c % 32) & 1]
        members.append(tuple(codes))
    return TreeArrays(
        left=np.where(leaf, _LEAF, nodes["left"].astype(np.intp)),
        right=np.where(leaf, _LEAF, nodes["right"].astype(np.intp)),
        feature=nodes["feature_idx"].astype(np.intp),
        threshold=nodes["num_threshold"].astype(np.float64),
        missing_left=nodes["missing_go_to_left"].astype(bool),
        members=tuple(members),
    )


@dataclass(slots=True)
class Ensemble:
    """The ``TreeEnsemble`` attributes of several trees, added one output (target) at a time."""

    n_targets: int
    roots: list[int] = field(default_factory=list)
    parts: dict[str, list[NDArray[Any]]] = field(default_factory=dict)
    members: list[float] = field(default_factory=list)
    n_nodes: int = 0
    n_leaves: int = 0

    def add_constant(self, value: float, target: int) -> None:
        """A tree whose every path ends in ``value`` (a baseline, or a one-leaf tree)."""
        self._append(
            target,
            nodes={"feature": [0], "mode": [BRANCH_LEQ], "split": [0.0], "missing": [1]},
            children=([self.n_leaves], [1], [self.n_leaves + 1], [1]),
            weights=np.array([value, value], dtype=np.float64),
        )

    def add(self, tree: TreeArrays, weights: FloatArray, target: int) -> None:
        """Add ``tree`` contributing ``weights[leaf]`` to output ``target``."""
        is_leaf = tree.left == _LEAF
        if is_leaf[0]:
            self.add_constant(float(weights[0]), target)
            return
        inner, leaves = np.flatnonzero(~is_leaf), np.flatnonzero(is_leaf)
        new_id = np.empty(len(is_leaf), dtype=np.int64)
        new_id[inner] = self.n_nodes + np.arange(len(inner))
        new_id[leaves] = self.n_leaves + np.arange(len(leaves))
        left, right = tree.left[inner], tree.right[inner]
        member = [tree.members[i] for i in inner]
        for codes in member:
            if codes is not None:
                self.members.extend([*codes, np.nan])
        self._append(
            target,
            nodes={
                "feature": tree.feature[inner],
                "mode": [BRANCH_MEMBER if codes is not None else BRANCH_LEQ for codes in member],
                "split": np.where([c is None for c in member], tree.threshold[inner], np.nan),
                "missing": tree.missing_left[inner],
            },
            children=(new_id[left], is_leaf[left], new_id[right], is_leaf[right]),
            weights=np.asarray(weights, dtype=np.float64)[leaves],
        )

    def _append(
        self, target: int, nodes: dict[str, Any], children: tuple[Any, Any, Any, Any], weights: FloatArray
    ) -> None:
        self.roots.append(self.n_nodes)
        columns = {**nodes, **dict(zip(("true", "true_leaf", "false", "false_leaf"), children, strict=True))}
        for key, values in columns.items():
            self.parts.setdefault(key, []).append(np.asarray(values))
        self.parts.setdefault("leaf_target", []).append(np.full(len(weights), target, dtype=np.int64))
        self.parts.setdefault("leaf_weight", []).append(weights)
        self.n_nodes += len(columns["feature"])
        self.n_leaves += len(weights)

    def attributes(self) -> dict[str, Any]:
        """Keyword attributes of the ``TreeEnsemble`` node."""
        part = {key: np.concatenate(values) for key, values in self.parts.items()}
        attrs: dict[str, Any] = {
            "n_targets": self.n_targets,
            "aggregate_function": 1,  # SUM
            "post_transform": 0,  # NONE
            "tree_roots": self.roots,
            "nodes_modes": numpy_helper.from_array(part["mode"].astype(np.uint8)),
            "nodes_featureids": part["feature"].astype(np.int64).tolist(),
            "nodes_splits": numpy_helper.from_array(part["split"].astype(np.float64)),
            "nodes_truenodeids": part["true"].astype(np.int64).tolist(),
            "nodes_trueleafs": part["true_leaf"].astype(np.int64).tolist(),
            "nodes_falsenodeids": part["false"].astype(np.int64).tolist(),
            "nodes_falseleafs": part["false_leaf"].astype(np.int64).tolist(),
            "nodes_missing_value_tracks_true": part["missing"].astype(np.int64).tolist(),
            "leaf_targetids": part["leaf_target"].tolist(),
            "leaf_weights": numpy_helper.from_array(part["leaf_weight"].astype(np.float64)),
        }
        if self.members:
            attrs["membership_values"] = numpy_helper.from_array(np.asarray(self.members, dtype=np.float64))
        return attrs


def run_ensemble(g: GraphBuilder, X: str, ensemble: Ensemble) -> str:
    """The ensemble's float64 ``[N, n_targets]`` sums over ``X`` (float64)."""
    return g.node("TreeEnsemble", X, domain=ML_DOMAIN, **ensemble.attributes())


# --- what each model sums ------------------------------------------------------------------


def _members(model: Any) -> list[Any]:
    return list(np.ravel(np.asarray(getattr(model, "estimators_", [model]), dtype=object)))


def forest_probabilities(model: Any) -> tuple[Ensemble, int]:
    """Per class, every tree's ``predict_proba`` (normalized leaf values); and the number of trees."""
    trees = _members(model)
    n_classes = int(model.n_classes_)
    ensemble = Ensemble(n_classes)
    normalized = []
    for member in trees:
        value = member.tree_.value[:, 0, :n_classes]
        normalizer = value.sum(axis=1)[:, np.newaxis]
        normalizer[normalizer == 0.0] = 1.0
        normalized.append(value / normalizer)
    for k in range(n_classes):
        for member, proba in zip(trees, normalized, strict=True):
            ensemble.add(sklearn_tree(member.tree_), proba[:, k], k)
    return ensemble, len(trees)


def forest_values(model: Any) -> tuple[Ensemble, int]:
    """Every regression tree's leaf value; and the number of trees."""
    trees = _members(model)
    ensemble = Ensemble(1)
    for member in trees:
        ensemble.add(sklearn_tree(member.tree_), member.tree_.value[:, 0, 0], 0)
    return ensemble, len(trees)


def boosting_scores(model: Any) -> Ensemble:
    """GradientBoosting's raw scores: the init prediction, then ``learning_rate * leaf`` per stage."""
    init = model.init_
    if not (init == "zero" or type(init).__name__ in ("DummyClassifier", "DummyRegressor")):
        raise ConversionError(
            f"{type(model).__name__} with init={type(init).__name__} has a per-row initial "
            "prediction that does not convert; use the default init."
        )
    baseline = model._raw_predict_init(np.zeros((1, model.n_features_in_), dtype=np.float32))[0]
    stages = model.estimators_
    ensemble = Ensemble(stages.shape[1])
    for k in range(stages.shape[1]):
        ensemble.add_constant(float(baseline[k]), k)
        for tree in stages[:, k]:
            ensemble.add(sklearn_tree(tree.tree_), model.learning_rate * tree.tree_.value[:, 0, 0], k)
    return ensemble


def hist_scores(model: Any, function: Any = None) -> Ensemble:
    """HistGradientBoosting's raw scores: the baseline, then every iteration's trees.

    ``function``: the monotone function the model's input went through; the thresholds are
    then pulled back through it (``pull_back``) to compare the values before it.
    """
    baseline = np.ravel(model._baseline_prediction)
    ensemble = Ensemble(len(baseline))
    for k, value in enumerate(baseline):
        ensemble.add_constant(float(value), k)
        for predictors in model._predictors:
            tree = hist_tree(predictors[k])
            if function is not None:
                tree = dataclasses.replace(tree, threshold=pull_back(function, tree.threshold))
            ensemble.add(tree, predictors[k].nodes["value"], k)
    return ensemble


MONOTONE_FUNCTIONS = (np.log, np.log1p, np.exp, np.sqrt)
"""Increasing functions whose thresholds are pulled back rather than the function computed in the graph."""


_SIGN_FLIP = np.int64(0x7FFFFFFFFFFFFFFF)


def _key(x: FloatArray) -> NDArray[np.int64]:
    """Float64 values as integers in the same order (adjacent floats are adjacent integers)."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.int64)
    return np.where(bits < 0, bits ^ _SIGN_FLIP, bits)


def _value(key: NDArray[np.int64]) -> FloatArray:
    """The float64 values of ``_key`` integers."""
    bits = np.where(key < 0, key ^ _SIGN_FLIP, key).astype(np.int64)
    values: FloatArray = bits.view(np.float64)
    return values


def pull_back(function: Any, thresholds: FloatArray) -> FloatArray:
    """Per threshold ``t``: the largest float64 ``x`` with ``function(x) <= t`` (NaN is not above).

    ``function(x) <= t`` is then exactly ``x <= pull_back(t)`` for an increasing ``function``,
    computed by numpy itself: onnxruntime's Log or Exp, a last bit away, is never consulted.
    """
    lo = np.full(thresholds.shape, _key(np.array([-np.inf]))[0])
    hi = np.full(thresholds.shape, _key(np.array([np.inf]))[0])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for _ in range(66):
            if (lo >= hi - 1).all():
                break
            mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)
            above = function(_value(mid)) > thresholds
            hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return _value(lo)


def monotone_source(operator: Any) -> tuple[Any, Any] | None:
    """The FunctionTransformer operator feeding ``operator`` and its function, if a listed increasing one."""
    producers = getattr(operator.inputs[0], "operators_outputs_", []) if len(operator.inputs) == 1 else []
    if len(producers) != 1:
        return None
    source = producers[0].raw_operator
    if not isinstance(source, FunctionTransformer) or source.kw_args:
        return None
    return (producers[0], source.func) if source.func in MONOTONE_FUNCTIONS else None


def _hist_raw_input(g: GraphBuilder, operator: Any) -> tuple[str, Any]:
    """HistGradientBoosting's input and the function to pull its thresholds back through (or None).

    After ``FunctionTransformer(np.log1p)`` (or log, exp, sqrt) the trees compare the values
    before the function with pulled-back thresholds; where the function gives NaN the value is
    NaN (missing) too, as the trees see it.
    """
    source = monotone_source(operator)
    if source is None or getattr(operator.raw_operator, "_preprocessor", None) is not None:
        return hist_input(g, operator), None
    producer, function = source
    names = [g.as_double(v) for v in producer.inputs]
    raw = names[0] if len(names) == 1 else g.node("Concat", *names, axis=1)
    undefined = g.node("IsNaN", g.as_double(operator.inputs[0]))
    return g.node("Where", undefined, g.constant("nan", [np.nan]), raw), function


# --- the input the trees compare -----------------------------------------------------------


def _as_double_matrix(g: GraphBuilder, operator: Any) -> str:
    inputs = operator.inputs
    names = [g.as_double(v) if not isinstance(v.type, StringTensorType) else "" for v in inputs]
    if "" in names:
        raise ConversionError(
            f"{type(operator.raw_operator).__name__} received text or categories; it expects numbers."
        )
    return names[0] if len(names) == 1 else g.node("Concat", *names, axis=1)


def float32_input(g: GraphBuilder, operator: Any) -> str:
    """X as trees and forests compare it: rounded to float32, held in float64."""
    return g.as_float32_values(_as_double_matrix(g, operator))


def hist_input(g: GraphBuilder, operator: Any) -> str:
    """X as HistGradientBoosting compares it: categorical columns first, as ordinal codes."""
    model = operator.raw_operator
    preprocessor = getattr(model, "_preprocessor", None)
    if preprocessor is None:
        return _as_double_matrix(g, operator)
    encoder = preprocessor.named_transformers_["encoder"]
    columns = []
    for name, _, selection in preprocessor.transformers_:
        indices = np.flatnonzero(selection) if np.asarray(selection).dtype == bool else selection
        for position, j in enumerate(np.asarray(indices, dtype=int)):
            column, kind = input_column(g, operator, int(j))
            if name == "encoder":
                columns.append(category_codes(g, column, encoder.categories_[position], kind))
            else:
                columns.append(_double(g, column, kind))
    return g.node("Concat", *columns, axis=1)


def _double(g: GraphBuilder, column: str, kind: Any) -> str:
    return column if isinstance(kind, DoubleTensorType) else g.node("Cast", column, to=TensorProto.DOUBLE)


# --- outputs ----------------------------------------------------------------------------------


def class_table(g: GraphBuilder, classes: NDArray[Any]) -> str:
    """A constant holding ``classes_`` in a type the label output can carry."""
    if classes.dtype.kind in "biu":
        return g.constant("classes", classes.astype(np.int64), TensorProto.INT64)
    if classes.dtype.kind == "f":
        return g.constant("classes", classes.astype(np.float64))
    return g.constant("classes", np.asarray(classes, dtype=object), TensorProto.STRING)


def label_type(classes: NDArray[Any], rows: Any) -> Any:
    """The skl2onnx type of the label output for ``classes_``."""
    if classes.dtype.kind in "biu":
        return Int64TensorType([rows])
    if classes.dtype.kind == "f":
        return DoubleTensorType([rows])
    return StringTensorType([rows])


def write_label(g: GraphBuilder, operator: Any, index: str) -> None:
    """``classes_[index]`` into the label output (``index``: int64 ``[N]``)."""
    table = class_table(g, np.asarray(operator.raw_operator.classes_))
    g.node("Gather", table, index, output=operator.outputs[0].full_name, axis=0)


def argmax(g: GraphBuilder, scores: str) -> str:
    """The first column holding each row's maximum, as ``np.argmax`` picks it."""
    return g.node("ArgMax", scores, axis=1, keepdims=0)


def classifier_shape(operator: Any) -> None:
    """Outputs of a classifier: the label ``[N]`` and float64 probabilities ``[N, n_classes]``."""
    model = operator.raw_operator
    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = label_type(np.asarray(model.classes_), rows)
    set_double_output(operator, len(model.classes_), index=1)


def regressor_shape(operator: Any) -> None:
    """Output of a regressor: float64 predictions ``[N, 1]``."""
    set_double_output(operator, 1)


# --- the converters ---------------------------------------------------------------------------


def _single_output(model: Any) -> None:
    if int(getattr(model, "n_outputs_", 1)) != 1:
        raise ConversionError(
            f"{type(model).__name__} was fitted on {model.n_outputs_} targets; only one target converts."
        )


def _probabilities_from_scores(g: GraphBuilder, model: Any, raw: str) -> str:
    """``predict_proba`` from raw scores: the sigmoid pair for two classes, else the softmax."""
    loss = type(model._loss).__name__
    if loss == "HalfMultinomialLoss":
        return g.node("Softmax", raw, axis=1)
    if loss not in ("HalfBinomialLoss", "ExponentialLoss"):
        raise ConversionError(f"{type(model).__name__} with loss {loss} has no exact conversion.")
    if loss == "ExponentialLoss":
        raw = g.node("Mul", raw, g.constant("two", [2.0]))
    positive = g.node("Sigmoid", raw)
    negative = g.node("Sub", g.constant("one", [1.0]), positive)
    return g.node("Concat", negative, positive, axis=1)


def _label_from_scores(g: GraphBuilder, raw: str, n_scores: int, *, at_zero: bool) -> str:
    """Class index from raw scores: ``raw > 0`` (``>= 0`` if ``at_zero``) for one score, else argmax."""
    if n_scores > 1:
        return argmax(g, raw)
    positive = g.node("GreaterOrEqual" if at_zero else "Greater", raw, g.constant("zero", [0.0]))
    return g.node(
        "Reshape", g.node("Cast", positive, to=TensorProto.INT64), g.constant("flat", [-1], TensorProto.INT64)
    )


def convert_forest_classifier(scope: Any, operator: Any, container: Any) -> None:
    """DecisionTree-, RandomForest- and ExtraTreesClassifier: mean of per-tree probabilities."""
    g, model = GraphBuilder(scope, container), operator.raw_operator
    _single_output(model)
    X = float32_input(g, operator)
    ensemble, n_trees = forest_probabilities(model)
    sums = run_ensemble(g, X, ensemble)
    proba = (
        sums
        if n_trees == 1 and not hasattr(model, "estimators_")
        else g.node("Div", sums, g.constant("n_trees", [float(n_trees)]))
    )
    g.node("Identity", proba, output=operator.outputs[1].full_name)
    if hasattr(model, "estimators_"):
        write_label(g, operator, argmax(g, proba))
        return
    votes = Ensemble(1)  # a single tree labels by its unnormalized leaf values
    votes.add(sklearn_tree(model.tree_), np.argmax(model.tree_.value[:, 0, :], axis=1).astype(np.float64), 0)
    index = g.node("Cast", run_ensemble(g, X, votes), to=TensorProto.INT64)
    write_label(g, operator, g.node("Reshape", index, g.constant("flat", [-1], TensorProto.INT64)))


def convert_forest_regressor(scope: Any, operator: Any, container: Any) -> None:
    """DecisionTree-, RandomForest- and ExtraTreesRegressor: mean of per-tree values."""
    g, model = GraphBuilder(scope, container), operator.raw_operator
    _single_output(model)
    ensemble, n_trees = forest_values(model)
    sums = run_ensemble(g, float32_input(g, operator), ensemble)
    if hasattr(model, "estimators_"):
        sums = g.node("Div", sums, g.constant("n_trees", [float(n_trees)]))
    g.node("Identity", sums, output=operator.outputs[0].full_name)


def convert_boosting_classifier(scope: Any, operator: Any, container: Any) -> None:
    """GradientBoostingClassifier: raw scores, then sigmoid or softmax; labels from the scores."""
    g, model = GraphBuilder(scope, container), operator.raw_operator
    ensemble = boosting_scores(model)
    raw = run_ensemble(g, float32_input(g, operator), ensemble)
    g.node("Identity", _probabilities_from_scores(g, model, raw), output=operator.outputs[1].full_name)
    write_label(g, operator, _label_from_scores(g, raw, ensemble.n_targets, at_zero=True))


def convert_boosting_regressor(scope: Any, operator: Any, container: Any) -> None:
    """GradientBoostingRegressor: the raw score is the prediction."""
    g = GraphBuilder(scope, container)
    raw = run_ensemble(g, float32_input(g, operator), boosting_scores(operator.raw_operator))
    g.node("Identity", raw, output=operator.outputs[0].full_name)


def convert_hist_classifier(scope: Any, operator: Any, container: Any) -> None:
    """HistGradientBoostingClassifier: raw scores over float64 X, then sigmoid or softmax."""
    g, model = GraphBuilder(scope, container), operator.raw_operator
    X, function = _hist_raw_input(g, operator)
    ensemble = hist_scores(model, function)
    raw = run_ensemble(g, X, ensemble)
    g.node("Identity", _probabilities_from_scores(g, model, raw), output=operator.outputs[1].full_name)
    write_label(g, operator, _label_from_scores(g, raw, ensemble.n_targets, at_zero=False))


def convert_hist_regressor(scope: Any, operator: Any, container: Any) -> None:
    """HistGradientBoostingRegressor: raw scores through the loss's inverse link."""
    g, model = GraphBuilder(scope, container), operator.raw_operator
    X, function = _hist_raw_input(g, operator)
    raw = run_ensemble(g, X, hist_scores(model, function))
    link = type(model._loss.link).__name__
    if link not in ("IdentityLink", "LogLink"):
        raise ConversionError(f"HistGradientBoostingRegressor with a {link} has no exact conversion.")
    if link == "LogLink":
        raw = g.node("Exp", raw)
    g.node("Identity", raw, output=operator.outputs[0].full_name)
