"""skl2onnx shape calculators and converters for the transformers in ``skewguard.bentos.transforms``.

Each converter repeats, node for node, the numpy arithmetic of its transformer, in
float64, so the graph computes what scikit-learn computed. ``register_converters()``
makes them known to skl2onnx; call it before ``skl2onnx.to_onnx``.

Graph inputs and outputs:

    DatetimeFeatures   float64 [N, k] epoch seconds         → float64 [N, 6k]
    SignedLog1p        float64 [N, k] (other numbers cast)  → float64 [N, k]
    ImageFeatures      float32 [N, 3072] pixels 0..255      → float64 [N, grid²·3 + 6]

Where scikit-learn raises, a graph cannot: DatetimeFeatures turns ±inf into NaN there.

skl2onnx's ColumnTransformer concatenates mixed float32/float64 blocks as float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from skl2onnx import update_registered_converter
from skl2onnx.common.data_types import (
    DoubleTensorType,
    FloatTensorType,
    Int64TensorType,
)

from skewguard.bentos.builder import NUMERIC_TYPES, GraphBuilder, require_tensor
from skewguard.bentos.images import IMAGE_VALUES
from skewguard.bentos.transforms import (
    DATETIME_FEATURES,
    EPOCH_WEEKDAY,
    MAX_EPOCH_SECONDS,
    SECONDS_PER_DAY,
    SECONDS_PER_HOUR,
    SQUARE_SCALE,
    DatetimeFeatures,
    ImageFeatures,
    SignedLog1p,
    _compute_datetime_features,
)
from skewguard.errors import ConversionError


def _datetime_shape(operator: Any) -> None:
    columns = require_tensor(operator, (DoubleTensorType, Int64TensorType), "float64")
    width = None if columns is None else len(DATETIME_FEATURES) * columns
    operator.outputs[0].type = DoubleTensorType([operator.inputs[0].get_first_dimension(), width])


def _datetime_converter(scope: Any, operator: Any, container: Any) -> None:
    g = GraphBuilder(scope, container)
    x = g.as_double(operator.inputs[0])
    day, hour_s = g.constant("day", [SECONDS_PER_DAY]), g.constant("hour", [SECONDS_PER_HOUR])
    week = g.constant("week", [7.0])
    valid = g.node("Less", g.node("Abs", x), g.constant("limit", [MAX_EPOCH_SECONDS]))
    whole = g.node("Floor", g.node("Where", valid, x, g.constant("nan", [np.nan])))
    days = g.node("Floor", g.node("Div", whole, day))
    in_day = g.node("Sub", whole, g.node("Mul", days, day))
    hour = g.node("Floor", g.node("Div", in_day, hour_s))
    shifted = g.node("Add", days, g.constant("epoch_weekday", [EPOCH_WEEKDAY]))
    weeks = g.node("Floor", g.node("Div", shifted, week))
    dow = g.node("Sub", shifted, g.node("Mul", weeks, week))
    hour_table, dow_table = trig_tables()
    cyclic = [*_look_up(g, hour, hour_table), *_look_up(g, dow, dow_table)]
    g.node("Concat", hour, dow, *cyclic, output=operator.outputs[0].full_name, axis=1)


def trig_tables() -> tuple[np.ndarray, np.ndarray]:
    """sin and cos of each hour (24 × 2) and weekday (7 × 2), as the transformer itself computes them.

    The graph looks them up instead of computing Sin and Cos: onnxruntime's differ from
    numpy's in the last bit, and a tree splitting between sin(2 h) = 0.5 and sin(10 h) =
    0.49999999999999994 would see the difference.
    """
    hours = _compute_datetime_features(np.arange(24, dtype=np.float64)[:, None] * SECONDS_PER_HOUR)
    days = np.arange(7, dtype=np.float64) - EPOCH_WEEKDAY  # day -3 of the epoch was a Monday
    weekdays = _compute_datetime_features(days[:, None] * SECONDS_PER_DAY)
    return hours[:, 2:4], weekdays[:, 4:6]


def _look_up(g: GraphBuilder, integer: str, table: np.ndarray) -> list[str]:
    """Each column of ``table`` at ``integer`` (an integer-valued float64 tensor); NaN stays NaN.

    One index for all columns: a NaN points at an added last row of NaNs.
    """
    missing = g.node("IsNaN", integer)
    at_nan = g.constant("nan_row", [float(len(table))])
    index = g.node("Cast", g.node("Where", missing, at_nan, integer), to=TensorProto.INT64)
    padded = np.vstack([table, np.full((1, table.shape[1]), np.nan)])
    return [g.node("Gather", g.constant("table", padded[:, j]), index, axis=0) for j in range(table.shape[1])]


def _signed_log_shape(operator: Any) -> None:
    columns = require_tensor(operator, NUMERIC_TYPES, "float64")
    operator.outputs[0].type = DoubleTensorType([operator.inputs[0].get_first_dimension(), columns])


def _signed_log_converter(scope: Any, operator: Any, container: Any) -> None:
    g = GraphBuilder(scope, container)
    x = g.as_double(operator.inputs[0])
    magnitude = g.node("Log", g.node("Add", g.node("Abs", x), g.constant("one", [1.0])))
    g.node("Mul", g.node("Sign", x), magnitude, output=operator.outputs[0].full_name)


def _image_source(operator: Any) -> Any:
    """The variable holding the image rows, seen through skl2onnx's column slicing.

    skl2onnx's ColumnTransformer maps the column name "image" to the graph input of that
    name, but then keeps only that input's first column, because the input is wider than
    the one column it selected. An ImageFeatures fed column 0 of a ``[N, 3072]`` input
    was given the image by name (scikit-learn would reject a single pixel column), so
    read the whole input instead (the unused slice stays as one cheap node).
    """
    variable = operator.inputs[0]
    producers = getattr(variable, "operators_outputs_", [])
    if len(producers) != 1 or producers[0].type != "SklearnArrayFeatureExtractor":
        return variable
    source = producers[0].inputs[0]
    is_whole_image = source.get_second_dimension() == IMAGE_VALUES
    return source if is_whole_image and list(producers[0].column_indices) == [0] else variable


def _image_shape(operator: Any) -> None:
    require_tensor(operator, NUMERIC_TYPES, f"float32 [N, {IMAGE_VALUES}]")
    columns = _image_source(operator).get_second_dimension()
    if columns not in (None, IMAGE_VALUES):
        raise ConversionError(
            f"ImageFeatures needs {IMAGE_VALUES} pixel values per row, but its input has "
            f"{columns} columns; declare the image input as FloatTensorType([None, "
            f"{IMAGE_VALUES}]) in initial_types."
        )
    width = operator.raw_operator.pooling_.shape[1] + 3
    operator.outputs[0].type = DoubleTensorType([operator.inputs[0].get_first_dimension(), width])


def _image_converter(scope: Any, operator: Any, container: Any) -> None:
    g = GraphBuilder(scope, container)
    model = operator.raw_operator
    source = _image_source(operator)
    x = source.full_name
    if not isinstance(source.type, FloatTensorType):
        x = g.node("Cast", x, to=TensorProto.FLOAT)
    f32, f64 = TensorProto.FLOAT, TensorProto.DOUBLE
    sums = g.node("MatMul", x, g.constant("pooling", model.pooling_, f32))
    pooled = g.node("Mul", g.node("Cast", sums, to=f64), g.constant("scales", model.scales_))
    block_sums = g.node("MatMul", g.node("Mul", x, x), g.constant("square_blocks", model.square_blocks_, f32))
    totals = g.node(
        "MatMul", g.node("Cast", block_sums, to=f64), g.constant("block_totals", model.block_totals_)
    )
    second = g.node("Mul", totals, g.constant("square_scale", [SQUARE_SCALE]))
    int64 = TensorProto.INT64
    bounds = [g.constant("start", [-3], int64), g.constant("end", [model.pooling_.shape[1]], int64)]
    means = g.node("Slice", pooled, *bounds, g.constant("axis", [1], int64))
    variance = g.node("Sub", second, g.node("Mul", means, means))
    stds = g.node("Sqrt", g.node("Max", variance, g.constant("zero", [0.0])))
    g.node("Concat", pooled, stds, output=operator.outputs[0].full_name, axis=1)


def register_converters() -> None:
    """Make skl2onnx convert ``DatetimeFeatures``, ``SignedLog1p`` and ``ImageFeatures``.

    Idempotent: registering again replaces the entries with the same functions.
    """
    update_registered_converter(
        DatetimeFeatures, "SkewguardDatetimeFeatures", _datetime_shape, _datetime_converter
    )
    update_registered_converter(SignedLog1p, "SkewguardSignedLog1p", _signed_log_shape, _signed_log_converter)
    update_registered_converter(ImageFeatures, "SkewguardImageFeatures", _image_shape, _image_converter)
