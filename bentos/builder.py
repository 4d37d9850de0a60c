"""The graph builder: named constants and nodes added to the graph skl2onnx is converting.

Every converter of ``skewguard.bentos`` writes its nodes through ``GraphBuilder``, so names
never collide and float64 constants stay float64. ``input_columns`` reads the width of an
operator's input, ``require_tensor`` checks its type the way the converters need it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from onnx import TensorProto
from skl2onnx.common.data_types import (
    DoubleTensorType,
    FloatTensorType,
    Int32TensorType,
    Int64TensorType,
)

from skewguard.errors import ConversionError

NUMERIC_TYPES = (DoubleTensorType, FloatTensorType, Int64TensorType, Int32TensorType)
REJECTED_ROWS: ContextVar[list[str] | None] = ContextVar("skewguard_rejected_rows", default=None)
"""While a pipeline converts: the bool ``[N, 1]`` tensors marking rows scikit-learn would reject."""
_NUMPY_TYPES: dict[int, type[np.generic]] = {
    TensorProto.INT64: np.int64,
    TensorProto.FLOAT: np.float32,
    TensorProto.DOUBLE: np.float64,
    TensorProto.BOOL: np.bool_,
}


@dataclass(frozen=True, slots=True)
class GraphBuilder:
    """Adds constants and nodes with fresh names to the graph being converted."""

    scope: Any
    container: Any

    def constant(self, hint: str, values: ArrayLike, dtype: int = TensorProto.DOUBLE) -> str:
        """A named initializer holding ``values`` (float64 unless told otherwise)."""
        name: str = self.scope.get_unique_variable_name(hint)
        if dtype == TensorProto.STRING:
            strings = [str(v).encode("utf-8") for v in np.ravel(np.asarray(values, dtype=object))]
            self.container.add_initializer(name, dtype, list(np.shape(values)), strings)
            return name
        array = np.asarray(values, dtype=_NUMPY_TYPES[dtype])
        self.container.add_initializer(name, dtype, list(array.shape), array.ravel().tolist())
        return name

    def node(
        self, op_type: str, *inputs: str, output: str | None = None, domain: str = "", **attrs: Any
    ) -> str:
        """Add one node and return the name of its (single) output."""
        result: str = output or self.scope.get_unique_variable_name(op_type.lower())
        op_name = self.scope.get_unique_operator_name(op_type)
        if domain:
            version = self.container.target_opset_any_domain(domain)
            self.container.add_node(
                op_type, list(inputs), [result], name=op_name, op_domain=domain, op_version=version, **attrs
            )
        else:
            self.container.add_node(op_type, list(inputs), [result], name=op_name, **attrs)
        return result

    def as_double(self, variable: Any) -> str:
        """The variable, cast to float64 unless it already is."""
        if isinstance(variable.type, DoubleTensorType):
            return str(variable.full_name)
        return self.node("Cast", variable.full_name, to=TensorProto.DOUBLE)

    def as_float32_values(self, name: str) -> str:
        """``name`` rounded to float32 and held as float64 again: what ``X.astype(np.float32)`` sees."""
        return self.node("Cast", self.node("Cast", name, to=TensorProto.FLOAT), to=TensorProto.DOUBLE)

    def columns(self, name: str, indices: ArrayLike) -> str:
        """The columns ``indices`` of a 2-D tensor, in that order."""
        index = self.constant("columns", np.asarray(indices, dtype=np.int64), TensorProto.INT64)
        return self.node("Gather", name, index, axis=1)

    def reject_rows(self, mask: str) -> None:
        """Mark the rows where ``mask`` (bool ``[N, 1]``) holds: the whole graph answers NaN for them."""
        recorded = REJECTED_ROWS.get()
        if recorded is None:
            raise ConversionError("reject_rows is only available while skewguard converts a pipeline.")
        recorded.append(mask)

    def column_shape(self, name: str) -> str:
        """The shape ``[N, 1]`` of one column as many rows as ``name`` (int64, for ``Expand``)."""
        rows = self.node(
            "Slice",
            self.node("Shape", name),
            self.constant("start", [0], TensorProto.INT64),
            self.constant("end", [1], TensorProto.INT64),
        )
        return self.node("Concat", rows, self.constant("one_column", [1], TensorProto.INT64), axis=0)

    def ones_column(self, name: str) -> str:
        """A float64 ``[N, 1]`` column of ones, as many rows as ``name``."""
        return self.node("Expand", self.constant("one", [[1.0]]), self.column_shape(name))


def require_tensor(operator: Any, allowed: tuple[type, ...], hint: str) -> int | None:
    """Check that ``operator`` has one input of an allowed type; return its number of columns if known."""
    types: list[Any] = [variable.type for variable in operator.inputs]
    if len(types) != 1 or not isinstance(types[0], allowed):
        names = ", ".join(type(t).__name__ for t in types) or "none"
        raise ConversionError(
            f"{operator.raw_operator.__class__.__name__} needs one input of type {hint}, "
            f"got {names}; declare it so in initial_types."
        )
    shape: list[Any] = list(getattr(types[0], "shape", []))
    columns = shape[1] if len(shape) == 2 else None
    return columns if isinstance(columns, int) else None


def set_double_output(operator: Any, columns: int | None, index: int = 0) -> None:
    """Declare output ``index`` of ``operator`` a float64 ``[N, columns]`` tensor."""
    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[index].type = DoubleTensorType([rows, columns])
