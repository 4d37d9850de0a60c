"""Conversion of a fitted scikit-learn pipeline into one ONNX graph with one input per field.

Tree ensembles compare float32 features with float64 thresholds in scikit-learn, while the
ONNX tree operators store float32 thresholds rounded to nearest: a feature equal to the
rounded-up threshold goes left in one and right in the other. Rounding every threshold
*down* to float32 makes ``x32 <= t`` and ``x32 <= round_down(t)`` agree for every float32
``x``, so such trees convert exactly by construction. That holds where scikit-learn itself
sees float32 features: forests and gradient boosting always cast; a
HistGradientBoosting model only after an explicit ``CastTransformer`` — without one it is
left as is and the parity gate decides.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
from skl2onnx import to_onnx
from skl2onnx.common.data_types import (
    DoubleTensorType,
    FloatTensorType,
    StringTensorType,
)
from skl2onnx.sklapi import CastTransformer
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import StandardScaler

from skewguard.bentos.classes import record_classes
from skewguard.bentos.converters import register_converters
from skewguard.bentos.images import IMAGE_VALUES
from skewguard.bentos.spec import InputSpec
from skewguard.errors import ConversionError

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
TREE_ESTIMATORS = ("tree_", "estimators_")


def convert_pipeline(pipeline: Any, spec: InputSpec) -> bytes:
    """Serialized ONNX graph of ``pipeline`` (probabilities without ZipMap)."""
    register_converters()
    exact = float32_exact_copy(pipeline)
    final = exact.steps[-1][1] if hasattr(exact, "steps") else exact
    options: dict[Any, Any] = {
        id(final): {"zipmap": False},
        TfidfVectorizer: {"locale": "C.UTF-8"},
        CountVectorizer: {"locale": "C.UTF-8"},
        StandardScaler: {"div": "div_cast"},
    }
    try:
        model = to_onnx(exact, initial_types=initial_types(spec), options=options, target_opset=TARGET_OPSET)
    except (RuntimeError, NotImplementedError, TypeError, ValueError, KeyError) as exc:
        raise ConversionError(
            f"skl2onnx could not convert the pipeline: {exc}. Use estimators with a registered "
            "converter, or register one with skl2onnx.update_registered_converter."
        ) from exc
    model.doc_string = "skewguard: transforms and model in one graph"
    record_classes(model)
    return bytes(model.SerializeToString())


def initial_types(spec: InputSpec) -> list[tuple[str, Any]]:
    """One graph input per raw field, typed so that no value is rounded on the way in."""
    types: list[tuple[str, Any]] = []
    for field in spec:
        if field.kind in ("numeric", "datetime"):
            types.append((field.name, DoubleTensorType([None, 1])))
        elif field.kind == "image":
            types.append((field.name, FloatTensorType([None, IMAGE_VALUES])))
        else:
            types.append((field.name, StringTensorType([None, 1])))
    return types


def float32_exact_copy(pipeline: Any) -> Any:
    """A copy whose tree thresholds are float32 values, with identical predictions."""
    exact = copy.deepcopy(pipeline)
    steps = [step for _, step in getattr(exact, "steps", [("model", exact)])]
    for previous, step in zip([None, *steps], steps, strict=False):
        if _casts_to_float32(step):
            _round_tree_thresholds(step)
        elif _is_hist_boosting(step) and _is_float32_cast(previous):
            _round_hist_thresholds(step)
    return exact


def _is_hist_boosting(estimator: Any) -> bool:
    return type(estimator).__name__.startswith("HistGradientBoosting")


def _is_float32_cast(estimator: Any) -> bool:
    return isinstance(estimator, CastTransformer) and np.dtype(estimator.dtype) == np.float32


def is_plain_tree_model(estimator: Any) -> bool:
    """A forest, gradient boosting or single tree (not HistGradientBoosting).

    These route missing values natively in scikit-learn, which the ONNX tree operators
    converted by skl2onnx do not reproduce; their inputs are therefore not nullable.
    """
    return _casts_to_float32(estimator)


def _casts_to_float32(estimator: Any) -> bool:
    return any(hasattr(estimator, attr) for attr in TREE_ESTIMATORS) and _trees(estimator) != []


def _trees(estimator: Any) -> list[Any]:
    if hasattr(estimator, "tree_"):
        return [estimator.tree_]
    members = np.ravel(np.asarray(getattr(estimator, "estimators_", []), dtype=object))
    return [t for m in members for t in _trees(m)]


def _round_down(values: np.ndarray) -> np.ndarray:
    rounded = values.astype(np.float32)
    too_high = rounded.astype(np.float64) > values
    rounded[too_high] = np.nextafter(rounded[too_high], np.float32(-np.inf))
    return rounded.astype(np.float64)


def _round_tree_thresholds(estimator: Any) -> None:
    for tree in _trees(estimator):
        threshold = tree.threshold
        split = tree.children_left != -1
        threshold[split] = _round_down(threshold[split])
        if not np.array_equal(tree.threshold[split], threshold[split]):
            raise ConversionError("Could not adjust the tree thresholds in place.")


def _round_hist_thresholds(estimator: Any) -> None:
    for predictors in estimator._predictors:
        for predictor in predictors:
            nodes = predictor.nodes
            split = nodes["is_leaf"] == 0
            nodes["num_threshold"][split] = _round_down(nodes["num_threshold"][split])


def graph_inputs(model: bytes) -> list[str]:
    """Names of the graph's inputs, in order."""
    return [i.name for i in onnx.load_from_string(model).graph.input]
