"""Conversion of a fitted scikit-learn pipeline, as the user wrote it, into one ONNX graph.

One graph input per raw field (float64 numbers and timestamps, strings, float32 image
pixels), so a client sends raw fields and no value is rounded on the way in. skl2onnx
walks the pipeline; the estimators listed in ``skewguard.bentos.exact`` convert with
skewguard's exact converters (given to skl2onnx for this one conversion), the others with
skl2onnx's own. Steps known not to convert exactly are refused first, naming the step,
why, and what to use instead (``skewguard.bentos.refusals``).

A pipeline that does not start with a ColumnTransformer takes all its columns as one
matrix: the graph then concatenates the per-field inputs into that matrix first.

skl2onnx 1.20 knows ``ai.onnx.ml`` up to opset 3; the tree converters write
``TreeEnsemble`` of opset 5, so a graph holding one declares ``ai.onnx.ml`` 5 (the other
operators of that domain it may hold are unchanged between opsets 3 and 5, except
``LabelEncoder`` 4, which only adds attributes; skl2onnx's own tree converters, whose
operators opset 5 deprecates, are never used).
"""

from __future__ import annotations

import warnings
from typing import Any

import onnx
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common._topology import Topology
from skl2onnx.common.data_types import (
    DoubleTensorType,
    FloatTensorType,
    StringTensorType,
)
from sklearn.base import is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.pipeline import Pipeline

from skewguard.bentos.builder import REJECTED_ROWS
from skewguard.bentos.classes import record_classes, record_task
from skewguard.bentos.converters import register_converters
from skewguard.bentos.exact import custom_converters
from skewguard.bentos.images import IMAGE_VALUES
from skewguard.bentos.preprocessing import NonFiniteGuard, rejects_non_finite
from skewguard.bentos.refusals import check_convertible
from skewguard.bentos.spec import InputSpec
from skewguard.bentos.store import Task
from skewguard.errors import ConfigError, ConversionError

TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}
ML_OPSET = 5
ROWS_INPUT = "skewguard_rows"
"""The matrix a pipeline without a ColumnTransformer reads, assembled in the graph from the fields."""
_ROW_KINDS = {"categorical": "string", "text": "string", "datetime": "numeric"}
_CONVERSION_ERRORS = (RuntimeError, NotImplementedError, TypeError, ValueError, KeyError, IndexError)


def final_estimator(pipeline: Any) -> Any:
    """The estimator that predicts: the last step of a Pipeline, or the estimator itself."""
    steps = getattr(pipeline, "steps", None)
    return final_estimator(steps[-1][1]) if steps else pipeline


def task_of(pipeline: Any, name: str = "pipeline") -> Task:
    """``"classification"`` or ``"regression"``, from the pipeline's final estimator."""
    final = final_estimator(pipeline)
    if is_classifier(final) and hasattr(pipeline, "predict_proba"):
        return "classification"
    if is_regressor(final):
        return "regression"
    raise ConfigError(
        f"Model {name!r}: expected a fitted scikit-learn pipeline ending in a classifier with "
        f"predict_proba or in a regressor, got {type(final).__name__}.",
        field="pipeline",
    )


def convert_pipeline(pipeline: Any, spec: InputSpec) -> bytes:
    """Serialized ONNX graph of ``pipeline``: (label, probabilities) or (predictions,)."""
    check_convertible(pipeline)
    task = task_of(pipeline)
    classifier = final_estimator(pipeline) if task == "classification" else None
    with warnings.catch_warnings():  # skl2onnx and onnx warn of their own deprecations, not the user's
        warnings.simplefilter("ignore", DeprecationWarning)
        model = _convert(guarded(pipeline), spec, classifier=classifier)
    model.doc_string = "skewguard: transforms and model in one graph"
    record_task(model, task)
    if task == "classification":
        record_classes(model)
    return bytes(model.SerializeToString())


def guarded(pipeline: Any) -> Any:
    """The pipeline with a ``NonFiniteGuard`` before a final estimator that rejects NaN and infinity.

    The steps are the user's own fitted objects; only the (new) Pipeline around them is
    different, and it is converted, never compared.
    """
    steps = list(getattr(pipeline, "steps", [("model", pipeline)]))
    if not rejects_non_finite(steps[-1][1]):
        return pipeline
    return Pipeline([*steps[:-1], ("skewguard_non_finite_guard", NonFiniteGuard()), steps[-1]])


def convert_transform(transformers: Any, spec: InputSpec) -> bytes:
    """Serialized ONNX graph of a pipeline of transformers (a prefix of a pipeline): its output."""
    return bytes(_convert(transformers, spec, classifier=None).SerializeToString())


def _convert(estimator: Any, spec: InputSpec, classifier: Any) -> onnx.ModelProto:
    rejected: list[str] = []
    token = REJECTED_ROWS.set(rejected)
    try:
        model = _convert_rows(estimator, spec, classifier)
    finally:
        REJECTED_ROWS.reset(token)
    if rejected:
        _answer_nan_for(model, rejected, skip_label=classifier is not None)
    return model


def _answer_nan_for(model: onnx.ModelProto, masks: list[str], *, skip_label: bool) -> None:
    """Make every (non-label) output NaN in the rows any of ``masks`` marks."""
    graph = model.graph
    nodes = list(graph.node)
    any_mask = masks[0]
    for i, mask in enumerate(masks[1:]):
        nodes.append(helper.make_node("Or", [any_mask, mask], [f"skewguard_rejected_{i}"]))
        any_mask = f"skewguard_rejected_{i}"
    nan = helper.make_tensor("skewguard_nan", TensorProto.DOUBLE, [1], [float("nan")])
    graph.initializer.append(nan)
    outputs = list(graph.output)[1:] if skip_label else list(graph.output)
    for output in outputs:
        unmasked = f"{output.name}_before_rejection"
        for node in nodes:
            node.output[:] = [unmasked if name == output.name else name for name in node.output]
            node.input[:] = [unmasked if name == output.name else name for name in node.input]
        nodes.append(helper.make_node("Where", [any_mask, "skewguard_nan", unmasked], [output.name]))
    del graph.node[:]
    graph.node.extend(nodes)


def _convert_rows(estimator: Any, spec: InputSpec, classifier: Any) -> onnx.ModelProto:
    register_converters()
    rows_type = _rows_type(estimator, spec)
    initial = [(ROWS_INPUT, rows_type)] if rows_type is not None else initial_types(spec)
    conversions, shapes = custom_converters()
    try:
        model = convert_sklearn(
            estimator,
            initial_types=initial,
            options=_options(classifier),
            target_opset=TARGET_OPSET,
            custom_conversion_functions=conversions,
            custom_shape_calculators=shapes,
        )
    except _CONVERSION_ERRORS as exc:
        raise ConversionError(
            f"skl2onnx could not convert the pipeline: {exc}. Use estimators with a registered "
            "converter, or register one with skl2onnx.update_registered_converter."
        ) from exc
    if not isinstance(model, onnx.ModelProto):
        raise ConversionError(f"skl2onnx returned {type(model).__name__}, not an ONNX model.")
    if rows_type is not None:
        _assemble_rows(model, spec)
    else:
        _name_fields(model, spec)
    _declare_ml_opset(model)
    return model


def _options(classifier: Any) -> dict[Any, Any]:
    options: dict[Any, Any] = {
        TfidfVectorizer: {"locale": "C.UTF-8"},
        CountVectorizer: {"locale": "C.UTF-8"},
    }
    if classifier is not None:
        options[id(classifier)] = {"zipmap": False}
    return options


def initial_types(spec: InputSpec) -> list[tuple[str, Any]]:
    """One graph input per raw field, typed so that no value is rounded on the way in."""
    return [(field.name, _field_type(field.kind)) for field in spec]


def _field_type(kind: str) -> Any:
    if kind in ("numeric", "datetime"):
        return DoubleTensorType([None, 1])
    if kind == "image":
        return FloatTensorType([None, IMAGE_VALUES])
    return StringTensorType([None, 1])


def _rows_type(pipeline: Any, spec: InputSpec) -> Any:
    """The type of the one matrix the pipeline reads, or None when it reads fields by name."""
    steps = getattr(pipeline, "steps", [(None, pipeline)])
    kinds = {_ROW_KINDS.get(f.kind, f.kind) for f in spec}
    if isinstance(steps[0][1], ColumnTransformer) or "image" in kinds or len(kinds) != 1:
        return None
    width = len(spec.fields)
    return StringTensorType([None, width]) if kinds == {"string"} else DoubleTensorType([None, width])


def _assemble_rows(model: onnx.ModelProto, spec: InputSpec) -> None:
    """Replace the matrix input by one input per field, concatenated in the graph."""
    graph = model.graph
    (matrix,) = graph.input
    element = matrix.type.tensor_type.elem_type
    fields = [helper.make_tensor_value_info(name, element, [None, 1]) for name in spec.names]
    del graph.input[:]
    graph.input.extend(fields)
    concat = helper.make_node("Concat", list(spec.names), [ROWS_INPUT], name="skewguard_fields", axis=1)
    graph.node.insert(0, concat)
    if element not in (TensorProto.DOUBLE, TensorProto.STRING):
        raise ConversionError(f"Unexpected input element type {element} for the field matrix.")


def _name_fields(model: onnx.ModelProto, spec: InputSpec) -> None:
    """Give the graph's inputs the fields' own names (skl2onnx turns "od280/od315" into
    "od280_od315"), in the spec's order; a field no step reads stays an unused input."""
    graph = model.graph
    taken: set[str] = set()
    given = {Topology._generate_unique_name(name, taken): name for name in spec.names}
    renamed = {i.name: given[i.name] for i in graph.input if i.name in given and given[i.name] != i.name}
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in renamed:
                node.input[position] = renamed[name]
    present = {given.get(i.name, i.name): i for i in graph.input}
    unknown = set(present) - set(spec.names)
    if unknown:
        raise ConversionError(f"The graph has inputs that are not fields: {sorted(unknown)}.")
    inputs = []
    for field, kind in initial_types(spec):
        existing = present.get(field)
        if existing is None:
            element = kind.to_onnx_type().tensor_type.elem_type
            existing = helper.make_tensor_value_info(field, element, [None, kind.shape[1]])
        existing.name = field
        inputs.append(existing)
    del graph.input[:]
    graph.input.extend(inputs)


def _declare_ml_opset(model: onnx.ModelProto) -> None:
    if not any(node.op_type == "TreeEnsemble" for node in model.graph.node):
        return
    for opset in model.opset_import:
        if opset.domain == "ai.onnx.ml":
            opset.version = max(opset.version, ML_OPSET)
