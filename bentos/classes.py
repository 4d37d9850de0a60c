"""The class labels of a classifier graph, in the order of its probability columns.

They are found in the graph itself — the classifier operator's ``classlabels_*`` attribute,
or the constant table the label output is looked up in — and recorded at packaging in the
graph's metadata under ``CLASSES_KEY`` (JSON), so serving reads them from onnxruntime without
importing the ``onnx`` package. The model file's sha256 covers the metadata like the graph.
"""

from __future__ import annotations

import json
from typing import Any

import onnx
from onnx import numpy_helper

from skewguard.bentos.runner import CLASSES_KEY, native
from skewguard.errors import ArtifactError

CLASS_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")
PASS_THROUGH_OPS = ("Cast", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")
"""Operators between the class table and the label output that keep the values as they are."""


def record_classes(model: onnx.ModelProto) -> None:
    """Write the graph's class labels into its metadata (replacing an earlier record)."""
    classes = classes_of(model.graph)
    kept = [p for p in model.metadata_props if p.key != CLASSES_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=CLASSES_KEY, value=json.dumps(list(classes)))


def read_classes(model: bytes) -> tuple[Any, ...]:
    """The class labels of a serialized graph, found in the graph."""
    return classes_of(onnx.load_from_string(model).graph)


def classes_of(graph: onnx.GraphProto) -> tuple[Any, ...]:
    """The class labels that feed the graph's label output."""
    if len(graph.output) < 2:
        raise ArtifactError("The stored graph has no probability output; expected (label, probabilities).")
    producers = {name: node for node in graph.node for name in node.output}
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    constants.update(
        {
            node.output[0]: numpy_helper.to_array(node.attribute[0].t)
            for node in graph.node
            if _is_constant(node)
        }
    )
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
        if node.op_type == "ArrayFeatureExtractor" and node.input[0] in constants:
            return tuple(native(v) for v in constants[node.input[0]].ravel())
        if node.op_type in (*PASS_THROUGH_OPS, "ArrayFeatureExtractor", "ArgMax"):
            pending.extend(node.input)
    raise ArtifactError(
        "Could not find the class labels in the stored graph (no classifier operator or class "
        "table feeds its label output). Package the model again with bentos.package."
    )


def _is_constant(node: onnx.NodeProto) -> bool:
    return node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value"
