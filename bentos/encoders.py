"""Exact ONNX conversion of OneHotEncoder, OrdinalEncoder and TargetEncoder: tables scikit-learn fills.

Each encoder maps one category of one feature to a fixed block of output values. The
converter asks the fitted encoder itself for that block — ``transform`` of every known
category, and of one value it never saw — and the graph looks rows up in the table: the
category's index (a text value through one ``LabelEncoder``, a number through ``Equal``
against the categories), then ``Gather`` of that row, where a value matching none gets the
encoder's own answer to an unseen value (zeros, the infrequent column, ``unknown_value``,
the target mean). Where scikit-learn raises on an unseen value
(``handle_unknown="error"``), the whole graph answers NaN for that row (``reject_rows``),
which serving refuses as well, whatever estimator follows.
Infrequent categories, ``drop`` and multiclass target encodings are in the tables already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from onnx import TensorProto
from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

from skewguard.bentos.builder import GraphBuilder, set_double_output

UNSEEN_TEXT = "\x00skewguard-unseen"


@dataclass(frozen=True, slots=True)
class FeatureTable:
    """One input feature: its categories, their output block, and the block of an unseen value."""

    categories: NDArray[Any]
    values: NDArray[np.float64]
    """``[len(categories), width]``"""
    unseen: NDArray[np.float64]
    """``[width]``; NaN where scikit-learn raises."""


def block_widths(encoder: Any) -> list[int]:
    """How many output columns each input feature of ``encoder`` has."""
    n_features = len(encoder.categories_)
    if hasattr(encoder, "drop_idx_"):  # OneHotEncoder
        return [len(encoder._compute_transformed_categories(i)) for i in range(n_features)]
    if getattr(encoder, "target_type_", None) == "multiclass":
        return [len(encoder.classes_)] * n_features
    return [1] * n_features


def _unseen_value(categories: NDArray[Any]) -> Any:
    if categories.dtype.kind in "OUS":
        return UNSEEN_TEXT
    finite = categories[~pd.isna(categories)].astype(np.float64)
    return float(finite.max()) + 1.0 if finite.size else 0.0


def _frame(encoder: Any, columns: list[NDArray[Any]]) -> Any:
    data = np.empty((len(columns[0]), len(columns)), dtype=object)
    for j, column in enumerate(columns):
        data[:, j] = column
    names = getattr(encoder, "feature_names_in_", None)
    if names is None:
        kinds = {c.dtype.kind for c in encoder.categories_}
        return data if kinds & set("OUS") else data.astype(np.float64)
    frame = pd.DataFrame(data, columns=list(names))
    for name, categories in zip(names, encoder.categories_, strict=True):
        if categories.dtype.kind not in "OUS":
            frame[name] = frame[name].astype(np.float64)
    return frame


def _dense(values: Any) -> NDArray[np.float64]:
    return np.asarray(values.toarray() if hasattr(values, "toarray") else values, dtype=np.float64)


def feature_tables(encoder: Any) -> list[FeatureTable]:
    """The lookup table of every feature, filled by the fitted ``encoder``."""
    widths = block_widths(encoder)
    offsets = np.concatenate([[0], np.cumsum(widths)])
    firsts = [c[0] for c in encoder.categories_]
    tables = []
    for i, categories in enumerate(encoder.categories_):
        block = slice(int(offsets[i]), int(offsets[i + 1]))
        rows = [np.full(len(categories), first, dtype=object) for first in firsts]
        rows[i] = np.asarray(categories, dtype=object)
        values = _dense(encoder.transform(_frame(encoder, rows)))[:, block]
        probe = [np.asarray([first], dtype=object) for first in firsts]
        probe[i] = np.asarray([_unseen_value(np.asarray(categories))], dtype=object)
        try:
            unseen = _dense(encoder.transform(_frame(encoder, probe)))[0, block]
        except ValueError:  # handle_unknown="error"
            unseen = np.full(widths[i], np.nan)
        tables.append(FeatureTable(np.asarray(categories), values, unseen))
    return tables


def input_column(g: GraphBuilder, operator: Any, j: int) -> tuple[str, Any]:
    """Column ``j`` of the operator's input (one matrix, or one input per column) and its type."""
    inputs = operator.inputs
    if len(inputs) == 1:
        return g.columns(inputs[0].full_name, [j]), inputs[0].type
    return inputs[j].full_name, inputs[j].type


def match_categories(g: GraphBuilder, column: str, categories: NDArray[Any], kind: Any) -> tuple[str, str]:
    """Per row: the index of the category equal to the value (int64 ``[N]``) and whether one is."""
    if isinstance(kind, StringTensorType):
        table = g.constant("categories", np.asarray([list(categories)], dtype=object), TensorProto.STRING)
        matches = g.node("Equal", column, table)
    else:
        values = (
            column if isinstance(kind, DoubleTensorType) else g.node("Cast", column, to=TensorProto.DOUBLE)
        )
        numbers = np.asarray(categories, dtype=np.float64)
        matches = g.node("Equal", values, g.constant("categories", [numbers]))
        if np.isnan(numbers).any():  # NaN is a category: it matches NaN
            is_nan = g.node("IsNaN", values)
            nan_column = g.constant("nan_category", [np.isnan(numbers)], TensorProto.BOOL)
            matches = g.node("Or", matches, g.node("And", is_nan, nan_column))
    as_double = g.node("Cast", matches, to=TensorProto.DOUBLE)
    index = g.node("ArgMax", as_double, axis=1, keepdims=0)
    axis = g.constant("axis", [1], TensorProto.INT64)
    found = g.node("Cast", g.node("ReduceMax", as_double, axis, keepdims=1), to=TensorProto.BOOL)
    return index, found


def text_index(g: GraphBuilder, column: str, categories: NDArray[Any]) -> str:
    """Int64 ``[N, 1]``: the index of each text value in ``categories``, ``len(categories)`` where none is.

    One ``LabelEncoder`` (a hash lookup of the exact string) does what ``Equal`` against every
    category and the reductions after it do, in one node instead of six.
    """
    positions = [i for i, c in enumerate(categories) if isinstance(c, str)]  # a text input is never NaN
    return g.node(
        "LabelEncoder",
        column,
        domain="ai.onnx.ml",
        keys_strings=[categories[i] for i in positions],
        values_int64s=positions,
        default_int64=len(categories),
    )


def category_codes(g: GraphBuilder, column: str, categories: NDArray[Any], kind: Any) -> str:
    """Float64 ``[N, 1]``: the index of each value in ``categories``, NaN where none matches."""
    if isinstance(kind, StringTensorType):
        index = text_index(g, column, categories)
        codes = g.node("Cast", index, to=TensorProto.DOUBLE)
        return g.node("Where", _unseen(g, index, categories), g.constant("nan", [np.nan]), codes)
    index, found = match_categories(g, column, categories, kind)
    column_index = g.node("Unsqueeze", index, g.constant("axis", [1], TensorProto.INT64))
    codes = g.node("Cast", column_index, to=TensorProto.DOUBLE)
    return g.node("Where", found, codes, g.constant("nan", [np.nan]))


def encoder_shape(operator: Any) -> None:
    """Float64 ``[N, total block width]``."""
    set_double_output(operator, sum(block_widths(operator.raw_operator)))


def _reachable(table: FeatureTable, kind: Any) -> FeatureTable:
    """A text input never carries a category that is not a string (nulls arrive as "")."""
    if not isinstance(kind, StringTensorType):
        return table
    keep = np.array([isinstance(c, str) for c in table.categories], dtype=bool)
    return FeatureTable(table.categories[keep], table.values[keep], table.unseen)


def convert_encoder(scope: Any, operator: Any, container: Any) -> None:
    """OneHotEncoder, OrdinalEncoder or TargetEncoder: a table lookup per feature, concatenated."""
    g = GraphBuilder(scope, container)
    blocks = []
    for j, full_table in enumerate(feature_tables(operator.raw_operator)):
        column, kind = input_column(g, operator, j)
        table = _reachable(full_table, kind)
        if isinstance(kind, StringTensorType):
            blocks.append(_text_lookup(g, column, table))
            continue
        index, found = match_categories(g, column, table.categories, kind)
        if np.isnan(table.unseen).any():  # scikit-learn raises on an unseen value: so does the graph
            g.reject_rows(g.node("Not", found))
        looked_up = g.node("Gather", g.constant("table", table.values), index, axis=0)
        blocks.append(g.node("Where", found, looked_up, g.constant("unseen", [table.unseen])))
    result = blocks[0] if len(blocks) == 1 else g.node("Concat", *blocks, axis=1)
    g.node("Identity", result, output=operator.outputs[0].full_name)


def _text_lookup(g: GraphBuilder, column: str, table: FeatureTable) -> str:
    """Float64 ``[N, width]``: each text value's block, from a table whose last row is the unseen value's."""
    index = text_index(g, column, table.categories)
    if np.isnan(table.unseen).any():  # scikit-learn raises on an unseen value: so does the graph
        g.reject_rows(_unseen(g, index, table.categories))
    rows = g.node("Reshape", index, g.constant("flat", [-1], TensorProto.INT64))
    values = np.vstack([table.values, table.unseen[None, :]])
    return g.node("Gather", g.constant("table", values), rows, axis=0)


def _unseen(g: GraphBuilder, index: str, categories: NDArray[Any]) -> str:
    """Bool ``[N, 1]``: the rows where ``text_index`` found no category."""
    return g.node("Equal", index, g.constant("unseen_index", [len(categories)], TensorProto.INT64))
