"""The ONNX runner: one stored model, one single-threaded session, raw rows in, predictions out.

This is what a Bento service (and the gateway, co-located) calls per request. It holds no
scikit-learn and loads no pickle: the graph, the input spec and the class labels all come
from the hash-verified files of the model store. Class labels are read from the graph
itself — the classifier operator's ``classlabels_*`` attribute, or the constant table the
label output is looked up in — so they cannot drift from the probabilities' column order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from bentos.inputs import Batch, encode_rows
from bentos.manifest import RouterRef
from bentos.parity import make_session, run_onnx
from bentos.spec import InputSpec
from bentos.store import StoredModel, load_model
from skewguard.errors import ArtifactError, ConversionError, ModelOutputError

CLASS_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")
PASS_THROUGH_OPS = ("Cast", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")
"""Operators between the class table and the label output that keep the values as they are."""


class OnnxRunner:
    """Predictions of one stored model: ``predict_rows`` for JSON rows, ``predict_batch`` for a Batch."""

    def __init__(self, model: StoredModel) -> None:
        self.model_tag = model.tag
        self.spec: InputSpec = model.spec
        self.classes_: tuple[Any, ...] = read_classes(model.onnx)
        self._keys = tuple(str(c) for c in self.classes_)
        self._allowed_extra = (model.spec.entity_key,) if model.spec.entity_key else ()
        self._session = make_session(model.onnx)

    @classmethod
    def load(cls, tag: str) -> OnnxRunner:
        """The runner of the model ``tag``, read and verified from the model store."""
        return cls(load_model(tag))

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Validate raw rows against the spec and predict; raises ``InputError`` naming the field."""
        return self.predict_batch(encode_rows(self.spec, rows, allowed_extra=self._allowed_extra))

    def predict_batch(self, batch: Batch) -> list[dict[str, Any]]:
        """``[{"label": ..., "probabilities": {"<class>": p, ...}}, ...]``, one per row.

        Labels are JSON-native (``int``, ``float``, ``str`` or ``bool``); probability keys are
        the classes as strings, in the graph's column order, as JSON would render them.
        """
        if batch.spec is not self.spec:  # a cascade's union batch: this graph's own columns
            batch = Batch(self.spec, {name: batch.columns[name] for name in self.spec.names})
        labels, probabilities = run_onnx(self._session, batch)
        if probabilities.shape != (len(batch), len(self._keys)):
            raise ConversionError(
                f"Model {self.model_tag}: the graph returned probabilities of shape "
                f"{probabilities.shape} for {len(batch)} rows and {len(self._keys)} classes."
            )
        if not np.isfinite(probabilities).all():
            row = int(np.flatnonzero(~np.isfinite(probabilities).all(axis=1))[0])
            raise ModelOutputError(
                f"Model {self.model_tag} answered non-finite probabilities for row {row} "
                f"({probabilities[row].tolist()}); the graph is broken, not the request."
            )
        return [
            {"label": _native(label), "probabilities": dict(zip(self._keys, row.tolist(), strict=True))}
            for label, row in zip(labels, probabilities, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class RowResult:
    """One row through a cascade: the route, P(router positive) and the specialist's answer."""

    route: str
    router_probability: float
    label: Any
    probabilities: dict[str, float]


def run_cascade(
    rule: RouterRef, router: OnnxRunner, branches: Mapping[str, OnnxRunner], batch: Batch
) -> list[RowResult]:
    """The router over ``batch``, then each branch's specialist over the rows routed to it, once each."""
    routed = router.predict_batch(batch)
    p_router = [rule.positive_probability(r["probabilities"]) for r in routed]
    routes = [rule.branch_for(p) for p in p_router]
    answers: list[dict[str, Any]] = [{}] * len(routes)
    for branch, runner in branches.items():
        index = [i for i, route in enumerate(routes) if route == branch]
        if not index:
            continue
        rows = batch if len(index) == len(routes) else batch.take(np.asarray(index, dtype=np.intp))
        for position, answer in zip(index, runner.predict_batch(rows), strict=True):
            answers[position] = answer
    return [
        RowResult(route, p, answer["label"], answer["probabilities"])
        for route, p, answer in zip(routes, p_router, answers, strict=True)
    ]


def read_classes(model: bytes) -> tuple[Any, ...]:
    """The class labels of a classifier graph, in the order of its probability columns."""
    graph = onnx.load_from_string(model).graph
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
                return tuple(_native(v) for v in values)
        if node.op_type == "ArrayFeatureExtractor" and node.input[0] in constants:
            return tuple(_native(v) for v in constants[node.input[0]].ravel())
        if node.op_type in (*PASS_THROUGH_OPS, "ArrayFeatureExtractor", "ArgMax"):
            pending.extend(node.input)
    raise ArtifactError(
        "Could not find the class labels in the stored graph (no classifier operator or class "
        "table feeds its label output). Package the model again with bentos.package."
    )


def _is_constant(node: onnx.NodeProto) -> bool:
    return node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value"


def _native(value: Any) -> Any:
    """A JSON-native Python value for a numpy scalar or protobuf bytes."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value
