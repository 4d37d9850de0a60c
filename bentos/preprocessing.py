"""Exact ONNX conversion of scikit-learn's numeric preprocessing, in float64, operation for operation.

skl2onnx converts the scalers to ``ai.onnx.ml.Scaler``, which computes in float32, and its
float64 ``Imputer`` has no onnxruntime kernel. Here each transformer repeats the numpy
arithmetic of its ``transform`` — the same operations on the same float64 constants in the
same order — so every value is the one scikit-learn computes (Sub, Mul, Div and Add are
correctly rounded in both):

    StandardScaler      (X - mean_) / scale_
    MinMaxScaler        X * scale_ + min_          (then clipped if ``clip``)
    RobustScaler        (X - center_) / scale_
    MaxAbsScaler        X / scale_
    SimpleImputer       NaN (or ``missing_values``) → statistics_, all-missing columns dropped,
                        missing indicator appended; on text: unchanged (nulls arrive as "")
    PolynomialFeatures  products built degree by degree as scikit-learn builds them
    FunctionTransformer identity, or one of np.log1p, np.log, np.exp, np.sqrt, np.abs
                        (log and exp are within one unit in the last place of numpy's)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto
from skl2onnx.common.data_types import StringTensorType
from sklearn.base import BaseEstimator, TransformerMixin

from skewguard.bentos.builder import GraphBuilder, set_double_output
from skewguard.errors import ConversionError


def _double_input(g: GraphBuilder, operator: Any) -> str:
    names = [g.as_double(v) for v in operator.inputs]
    return names[0] if len(names) == 1 else g.node("Concat", *names, axis=1)


def _width(operator: Any) -> int | None:
    widths = [v.get_second_dimension() for v in operator.inputs]
    return None if any(not isinstance(w, int) for w in widths) else sum(widths)


def same_width_shape(operator: Any) -> None:
    """A float64 output as wide as the inputs together."""
    set_double_output(operator, _width(operator))


def _finish(g: GraphBuilder, operator: Any, result: str) -> None:
    g.node("Identity", result, output=operator.outputs[0].full_name)


def convert_standard_scaler(scope: Any, operator: Any, container: Any) -> None:
    model = operator.raw_operator
    _shift_and_scale(
        scope,
        operator,
        container,
        model.mean_ if model.with_mean else None,
        model.scale_ if model.with_std else None,
    )


def convert_minmax_scaler(scope: Any, operator: Any, container: Any) -> None:
    g, model = GraphBuilder(scope, container), operator.raw_operator
    X = g.node("Mul", _double_input(g, operator), g.constant("scale", [model.scale_]))
    X = g.node("Add", X, g.constant("min", [model.min_]))
    if model.clip:
        low, high = model.feature_range
        X = g.node("Clip", X, g.constant("low", float(low)), g.constant("high", float(high)))
    _finish(g, operator, X)


def convert_robust_scaler(scope: Any, operator: Any, container: Any) -> None:
    model = operator.raw_operator
    _shift_and_scale(
        scope,
        operator,
        container,
        model.center_ if model.with_centering else None,
        model.scale_ if model.with_scaling else None,
    )


def _shift_and_scale(scope: Any, operator: Any, container: Any, center: Any, scale: Any) -> None:
    """``(X - center) / scale`` in float64, a step left out where the scaler leaves it out (None)."""
    g = GraphBuilder(scope, container)
    X = _double_input(g, operator)
    if center is not None:
        X = g.node("Sub", X, g.constant("center", [center]))
    if scale is not None:
        X = g.node("Div", X, g.constant("scale", [scale]))
    _finish(g, operator, X)


def convert_maxabs_scaler(scope: Any, operator: Any, container: Any) -> None:
    g, model = GraphBuilder(scope, container), operator.raw_operator
    _finish(g, operator, g.node("Div", _double_input(g, operator), g.constant("scale", [model.scale_])))


# --- SimpleImputer ----------------------------------------------------------------------------


def _is_text(operator: Any) -> bool:
    return any(isinstance(v.type, StringTensorType) for v in operator.inputs)


def _kept_columns(model: Any) -> np.ndarray:
    statistics = np.asarray(model.statistics_, dtype=np.float64)
    if getattr(model, "keep_empty_features", False):
        return np.arange(len(statistics))
    return np.flatnonzero(~np.isnan(statistics))


def imputer_shape(operator: Any) -> None:
    """Text passes through as text; numbers come out float64, minus all-missing columns, plus indicators."""
    model = operator.raw_operator
    if _is_text(operator):
        operator.outputs[0].type = StringTensorType(
            [operator.inputs[0].get_first_dimension(), _width(operator)]
        )
        return
    indicator = getattr(model, "indicator_", None)
    extra = 0 if indicator is None else len(indicator.features_)
    set_double_output(operator, len(_kept_columns(model)) + extra)


def _missing_mask(g: GraphBuilder, X: str, missing: Any) -> str:
    if missing is None or (isinstance(missing, float) and np.isnan(missing)):
        return g.node("IsNaN", X)
    return g.node("Equal", X, g.constant("missing", [float(missing)]))


def convert_simple_imputer(scope: Any, operator: Any, container: Any) -> None:
    g, model = GraphBuilder(scope, container), operator.raw_operator
    if _is_text(operator):  # skewguard sends a null string as "", which scikit-learn does not impute either
        names = [v.full_name for v in operator.inputs]
        _finish(g, operator, names[0] if len(names) == 1 else g.node("Concat", *names, axis=1))
        return
    X = _double_input(g, operator)
    mask = _missing_mask(g, X, model.missing_values)
    kept = _kept_columns(model)
    filled = g.node("Where", mask, g.constant("statistics", [np.asarray(model.statistics_)]), X)
    parts = [g.columns(filled, kept) if len(kept) < len(model.statistics_) else filled]
    indicator = getattr(model, "indicator_", None)
    if indicator is not None:
        flags = g.node("Cast", g.columns(mask, indicator.features_), to=TensorProto.DOUBLE)
        parts.append(flags)
    _finish(g, operator, parts[0] if len(parts) == 1 else g.node("Concat", *parts, axis=1))


# --- PolynomialFeatures -----------------------------------------------------------------------


def polynomial_plan(model: Any, n_features: int) -> list[tuple[list[int], list[int]]]:
    """Per degree ≥ 2: which earlier output columns multiply which input features (scikit-learn's loop)."""
    current = 1 if model.include_bias else 0
    index = [*range(current, current + n_features), current + n_features]
    current += n_features
    plan = []
    for _ in range(2, model._max_degree + 1):
        new_index, sources, features = [], [], []
        end = index[-1]
        for feature in range(n_features):
            start = index[feature]
            new_index.append(current)
            if model.interaction_only:
                start += index[feature + 1] - index[feature]
            width = end - start
            if width <= 0:
                break
            sources += list(range(start, end))
            features += [feature] * width
            current += width
        new_index.append(current)
        index = new_index
        plan.append((sources, features))
    return plan


def polynomial_shape(operator: Any) -> None:
    set_double_output(operator, int(operator.raw_operator.n_output_features_))


def convert_polynomial_features(scope: Any, operator: Any, container: Any) -> None:
    g, model = GraphBuilder(scope, container), operator.raw_operator
    X = _double_input(g, operator)
    n_features = int(model.n_features_in_)
    columns = [X]
    if model.include_bias:
        columns.insert(0, g.ones_column(X))
    XP = g.node("Concat", *columns, axis=1) if len(columns) > 1 else X
    for sources, features in polynomial_plan(model, n_features):
        block = g.node("Mul", g.columns(XP, sources), g.columns(X, features))
        XP = g.node("Concat", XP, block, axis=1)
    n_out, n_full = int(model.n_output_features_), int(model._n_out_full)
    if n_out < n_full:
        keep = ([0] if model.include_bias else []) + list(
            range(n_full - n_out + int(model.include_bias), n_full)
        )
        XP = g.columns(XP, keep)
    _finish(g, operator, XP)


# --- FunctionTransformer ----------------------------------------------------------------------


def _log1p(g: GraphBuilder, X: str) -> str:
    """log1p as ``x`` where ``1 + x`` rounds to 1, else ``log(u) * x / (u - 1)`` with ``u = 1 + x``.

    The quotient cancels the rounding of ``1 + x`` (Goldberg's method), so small values keep
    their precision, as numpy's log1p does; ``u = 0`` gives -inf and ``u < 0`` NaN, as there.
    """
    one = g.constant("one", [1.0])
    u = g.node("Add", X, one)
    log_u = g.node("Log", u)
    corrected = g.node("Div", g.node("Mul", log_u, X), g.node("Sub", u, one))
    exact = g.node("Where", g.node("IsInf", u), log_u, corrected)
    return g.node("Where", g.node("Equal", u, one), X, exact)


ELEMENTWISE: dict[Any, Callable[[GraphBuilder, str], str]] = {
    np.log1p: _log1p,
    np.log: lambda g, X: g.node("Log", X),
    np.exp: lambda g, X: g.node("Exp", X),
    np.sqrt: lambda g, X: g.node("Sqrt", X),
    np.abs: lambda g, X: g.node("Abs", X),
}
"""The functions a FunctionTransformer may apply, and their graphs."""


def is_convertible_function(model: Any) -> bool:
    """Whether the FunctionTransformer converts: identity, or a listed numpy function without arguments."""
    return (model.func is None or model.func in ELEMENTWISE) and not model.kw_args


def function_shape(operator: Any) -> None:
    if operator.raw_operator.func is None and _is_text(operator):
        operator.outputs[0].type = operator.inputs[0].type.__class__(
            [operator.inputs[0].get_first_dimension(), _width(operator)]
        )
        return
    same_width_shape(operator)


def convert_function_transformer(scope: Any, operator: Any, container: Any) -> None:
    g, model = GraphBuilder(scope, container), operator.raw_operator
    if not is_convertible_function(model):
        raise ConversionError(
            f"FunctionTransformer({getattr(model.func, '__name__', model.func)!r}) has no ONNX graph."
        )
    if model.func is None and _is_text(operator):
        names = [v.full_name for v in operator.inputs]
        _finish(g, operator, names[0] if len(names) == 1 else g.node("Concat", *names, axis=1))
        return
    X = _double_input(g, operator)
    _finish(g, operator, X if model.func is None else ELEMENTWISE[model.func](g, X))


# --- rows scikit-learn rejects ----------------------------------------------------------------


class NonFiniteGuard(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Placed (in the converted copy only) before an estimator that rejects NaN and infinity.

    In scikit-learn it passes X through; in the graph a row holding a non-finite feature
    becomes all NaN, so the graph answers NaN where scikit-learn raises, and serving refuses
    the row instead of answering a number scikit-learn would never have given.
    """

    def fit(self, X: Any, y: object = None) -> NonFiniteGuard:
        return self

    def transform(self, X: Any) -> Any:
        return X


def guard_shape(operator: Any) -> None:
    same_width_shape(operator)


def convert_guard(scope: Any, operator: Any, container: Any) -> None:
    g = GraphBuilder(scope, container)
    X = _double_input(g, operator)
    bad = g.node("Or", g.node("IsNaN", X), g.node("IsInf", X))
    axis = g.constant("axis", [1], TensorProto.INT64)
    row_bad = g.node("ReduceMax", g.node("Cast", bad, to=TensorProto.DOUBLE), axis, keepdims=1)
    is_bad = g.node("Cast", row_bad, to=TensorProto.BOOL)
    _finish(g, operator, g.node("Where", is_bad, g.constant("nan", [np.nan]), X))


def rejects_non_finite(estimator: Any) -> bool:
    """Whether scikit-learn's ``estimator`` raises on NaN or infinity in its input."""
    try:
        return not estimator.__sklearn_tags__().input_tags.allow_nan
    except AttributeError:
        return False
