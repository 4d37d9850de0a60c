"""Exact ONNX conversion of scikit-learn's linear models, in float64 throughout.

``X @ coef_.T + intercept_`` (MatMul and Add in float64; only the order in which the
dot product sums its terms may differ from BLAS, a difference of a few units in the last
place), then what ``predict_proba`` does with it: the logistic pair ``[1 - p, p]`` for two
classes, the softmax for more (LogisticRegression). Labels come from the scores as in
``predict``: ``score > 0`` for two classes, else the first largest score. A regressor's
prediction is the score itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from skewguard.bentos.builder import GraphBuilder
from skewguard.bentos.trees import write_label
from skewguard.errors import ConversionError


def _double_input(g: GraphBuilder, operator: Any) -> str:
    names = [g.as_double(v) for v in operator.inputs]
    return names[0] if len(names) == 1 else g.node("Concat", *names, axis=1)


def _scores(g: GraphBuilder, operator: Any) -> str:
    """Float64 ``[N, n_scores]`` decision function."""
    model = operator.raw_operator
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    intercept = np.ravel(np.asarray(model.intercept_, dtype=np.float64))
    if coef.shape[0] != max(intercept.size, 1):
        raise ConversionError(f"{type(model).__name__}: coef_ and intercept_ do not match.")
    product = g.node("MatMul", _double_input(g, operator), g.constant("coef", coef.T))
    return g.node("Add", product, g.constant("intercept", intercept if intercept.size else [0.0]))


def convert_logistic_regression(scope: Any, operator: Any, container: Any) -> None:
    """LogisticRegression: the logistic pair for two classes, else the softmax of the scores."""
    g = GraphBuilder(scope, container)
    scores = _scores(g, operator)
    if len(operator.raw_operator.classes_) == 2:
        flat = g.constant("flat", [-1], TensorProto.INT64)
        positive = g.node("Sigmoid", scores)
        proba = g.node("Concat", g.node("Sub", g.constant("one", [1.0]), positive), positive, axis=1)
        above = g.node("Greater", scores, g.constant("zero", [0.0]))
        index = g.node("Reshape", g.node("Cast", above, to=TensorProto.INT64), flat)
    else:
        proba = g.node("Softmax", scores, axis=1)
        index = g.node("ArgMax", scores, axis=1, keepdims=0)
    g.node("Identity", proba, output=operator.outputs[1].full_name)
    write_label(g, operator, index)


def convert_linear_regressor(scope: Any, operator: Any, container: Any) -> None:
    """LinearRegression, Ridge, Lasso, ElasticNet: the score is the prediction (one target)."""
    g, model = GraphBuilder(scope, container), operator.raw_operator
    if np.ndim(model.coef_) > 1 and np.shape(model.coef_)[0] > 1:
        raise ConversionError(f"{type(model).__name__} was fitted on several targets; only one converts.")
    g.node("Identity", _scores(g, operator), output=operator.outputs[0].full_name)
