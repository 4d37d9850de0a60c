"""Tree models in the graph: sums per output, NaN and categories as fitted, thresholds pulled back."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from skewguard.bentos.trees import ML_DOMAIN, Ensemble, TreeArrays, pull_back


def _run(ensemble: Ensemble, X: np.ndarray) -> np.ndarray:
    node = helper.make_node("TreeEnsemble", ["X"], ["Y"], domain=ML_DOMAIN, **ensemble.attributes())
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node],
        "trees",
        [value("X", TensorProto.DOUBLE, [None, X.shape[1]])],
        [value("Y", TensorProto.DOUBLE, None)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(ML_DOMAIN, 5)]
    )
    return np.asarray(ort.InferenceSession(model.SerializeToString()).run(None, {"X": X})[0])


def _stump(threshold: float, missing_left: bool) -> TreeArrays:
    return TreeArrays(
        left=np.array([1, -1, -1]),
        right=np.array([2, -1, -1]),
        feature=np.array([0, 0, 0]),
        threshold=np.array([threshold, 0.0, 0.0]),
        missing_left=np.array([missing_left, False, False]),
        members=(None, None, None),
    )


def test_each_output_sums_its_own_baseline_and_trees() -> None:
    ensemble = Ensemble(3)
    for target, base in enumerate((0.25, -1.5, 4.0)):  # a baseline per output, then a stump each
        ensemble.add_constant(base, target)
        ensemble.add(
            _stump(0.5, missing_left=target == 1), np.array([0.0, 10.0 * (target + 1), -1.0]), target
        )
    X = np.array([[0.5], [np.nextafter(0.5, 1.0)], [np.nan]])
    assert _run(ensemble, X).tolist() == [
        [10.25, 18.5, 34.0],  # x <= 0.5 goes left
        [-0.75, -2.5, 3.0],
        [-0.75, 18.5, 3.0],  # NaN follows each node's missing side
    ]


def test_a_categorical_split_tests_membership() -> None:
    tree = TreeArrays(
        left=np.array([1, -1, -1]),
        right=np.array([2, -1, -1]),
        feature=np.array([0, 0, 0]),
        threshold=np.zeros(3),
        missing_left=np.array([True, False, False]),
        members=((1.0, 3.0), None, None),
    )
    ensemble = Ensemble(1)
    ensemble.add(tree, np.array([0.0, 1.0, 2.0]), 0)
    X = np.array([[1.0], [2.0], [3.0], [np.nan]])
    assert _run(ensemble, X)[:, 0].tolist() == [1.0, 2.0, 1.0, 1.0]


@settings(max_examples=50, deadline=None)
@given(t=st.floats(-50, 700, allow_nan=False), name=st.sampled_from(["log1p", "log", "sqrt", "exp"]))
def test_pulled_back_thresholds_split_where_numpy_splits(t: float, name: str) -> None:
    function = getattr(np, name)
    x = pull_back(function, np.array([t]))[0]
    with np.errstate(all="ignore"):
        at, after = function(x), function(np.nextafter(x, np.inf))
    assert np.isnan(at) or at <= t or (name == "exp" and x == -np.inf)
    assert after > t


@pytest.mark.parametrize("name", ["log1p", "log"])
def test_values_where_the_function_is_undefined_stay_below_every_threshold(name: str) -> None:
    x = pull_back(getattr(np, name), np.array([-30.0, 0.0, 3.0]))
    assert (x >= (-1.0 if name == "log1p" else 0.0)).all()
