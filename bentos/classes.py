"""What a stored classifier graph answers: its task, and its class labels in column order.

The labels are found in the graph itself — the classifier operator's ``classlabels_*``
attribute, or the constant table the label output is looked up in (``ArrayFeatureExtractor``
or ``Gather``) — and recorded at packaging in the graph's metadata under ``CLASSES_KEY``
(JSON), beside the task under ``TASK_KEY``, so serving reads both from onnxruntime. The
model file's sha256 covers the metadata like the graph. Neither packaging nor serving owns
this module: serving imports ``CLASSES_KEY`` and ``native`` from it, and only the functions
that read a graph import the ``onnx`` package (inside them), so serving never does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from skewguard.errors import ArtifactError

if TYPE_CHECKING:
    import onnx

CLASSES_KEY = "skewguard.classes"
"""The graph metadata entry that holds its class labels (JSON)."""
TASK_KEY = "skewguard.task"
"""The graph metadata entry that holds its task, ``classification`` or ``regression``."""
CLASS_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")
PASS_THROUGH_OPS = ("Cast", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")
"""Operators between the class table and the label output that keep the values as they are."""
LOOKUP_OPS = ("ArrayFeatureExtractor", "Gather")
"""Operators that look labels up in a constant class table (their first input)."""


def native(value: Any) -> Any:
    """A JSON-native Python value for a numpy scalar or protobuf bytes."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def _record(model: onnx.ModelProto, key: str, value: str) -> None:
    kept = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=key, value=value)


def record_classes(model: onnx.ModelProto) -> None:
    """Write the graph's class labels into its metadata (replacing an earlier record)."""
    _record(model, CLASSES_KEY, json.dumps(list(classes_of(model.graph))))


def record_task(model: onnx.ModelProto, task: str) -> None:
    """Write the graph's task into its metadata (replacing an earlier record)."""
    _record(model, TASK_KEY, task)


def read_classes(model: bytes) -> tuple[Any, ...]:
    """The class labels of a serialized graph, found in the graph."""
    import onnx

    return classes_of(onnx.load_from_string(model).graph)


def _constants(graph: onnx.GraphProto) -> dict[str, Any]:
    from onnx import numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return constants


def classes_of(graph: onnx.GraphProto) -> tuple[Any, ...]:
    """The class labels that feed the graph's label output."""
    if len(graph.output) < 2:
        raise ArtifactError("The stored graph has no probability output; expected (label, probabilities).")
    producers = {name: node for node in graph.node for name in node.output}
    constants = _constants(graph)
    pending, seen = [graph.output[0].name], set()
    while pending:
        name = pending.pop()
        node = producers.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        for attribute in node.attribute:
            if attribute.name in CLASS_ATTRIBUTES and (attribute.strings or attribute.ints):
                values = attribute.strings or attribute.ints
                return tuple(native(v) for v in values)
        if node.op_type in LOOKUP_OPS and node.input[0] in constants:
            return tuple(native(v) for v in constants[node.input[0]].ravel())
        if node.op_type in (*PASS_THROUGH_OPS, *LOOKUP_OPS, "ArgMax"):
            pending.extend(node.input)
    raise ArtifactError(
        "Could not find the class labels in the stored graph (no classifier operator or class "
        "table feeds its label output). Package the model again with bentos.package."
    )
