"""The conformance suite: each everyday pipeline packages exactly as written, or is refused with a remedy.

Every packaged graph is checked here again, apart from the gate's own report: onnxruntime
and the fitted pipeline on the held-out rows and on freshly generated probes, within
1e-6 (labels identical; a regressor within 1e-6·max(1, |y|)), and NaN from the graph
exactly where scikit-learn raises. docs/conformance.md must equal a fresh rendering.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skewguard.bentos.inputs import Batch, encode_frame
from skewguard.bentos.parity import make_session, run_graph
from skewguard.bentos.probes import generate_probes
from skewguard.bentos.store import load_model
from tests.bentos.conformance import CASES, TOLERANCE, Case, Outcome, dataset, render_table, run_case

DOCS = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
MIN_PACKAGED_SHARE = 0.9


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    started = time.perf_counter()
    results = {case.name: run_case(case, i) for i, case in enumerate(CASES, 1)}
    print(f"\nconformance suite: {len(results)} cases in {time.perf_counter() - started:.1f} s")
    return results


def _sklearn_rejects(pipeline: Any, batch: Batch) -> np.ndarray:
    rejected = np.zeros(len(batch), dtype=bool)
    pending = [np.arange(len(batch), dtype=np.intp)]
    while pending:
        part = pending.pop()
        try:
            pipeline.predict(batch.take(part).to_frame())
        except ValueError:
            if len(part) == 1:
                rejected[part[0]] = True
            else:
                pending += [part[: len(part) // 2], part[len(part) // 2 :]]
    return rejected


def _expected(pipeline: Any, batch: Batch, task: str) -> tuple[np.ndarray, np.ndarray]:
    frame = batch.to_frame()
    if task == "regression":
        return np.empty(0), np.asarray(pipeline.predict(frame), dtype=np.float64)[:, None]
    return np.asarray(pipeline.predict(frame)), np.asarray(pipeline.predict_proba(frame), dtype=np.float64)


def assert_graph_matches(pipeline: Any, tag: str, case: Case) -> None:
    """The stored graph answers what the pipeline answers, on held-out rows and fresh probes."""
    stored = load_model(tag)
    assert stored.parity["passed"] is True
    assert stored.parity["tolerance"] == TOLERANCE
    session = make_session(stored.onnx)
    heldout = encode_frame(stored.spec, dataset(case.data)[2])
    for batch in (heldout, generate_probes(pipeline, heldout, seed=1)[0]):
        labels, values = run_graph(session, batch, stored.task)
        rejected = _sklearn_rejects(pipeline, batch)
        assert np.isnan(values[rejected]).any(axis=1).all(), "a row scikit-learn rejects got a number"
        kept = np.flatnonzero(~rejected)
        want_labels, want = _expected(pipeline, batch.take(kept), stored.task)
        scale = np.maximum(1.0, np.abs(want)) if stored.task == "regression" else 1.0
        assert (
            np.abs(values[kept] - want).max() / np.min(scale) <= TOLERANCE
            or (np.abs(values[kept] - want) <= TOLERANCE * scale).all()
        )
        if stored.task == "classification":
            assert labels[kept].astype(str).tolist() == want_labels.astype(str).tolist()


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[f"{i:02d}" for i in range(1, len(CASES) + 1)])
def test_each_pipeline_packages_exactly_or_is_refused_with_a_remedy_that_packages(
    case: Case, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes[case.name]
    if case.expects_refusal:
        assert not outcome.packaged
        assert "does not convert exactly" in outcome.refusal
        assert "Remedy:" in outcome.refusal
        assert outcome.remedy_packaged
    else:
        assert outcome.packaged, outcome.refusal
    assert_graph_matches(outcome.pipelines[0], outcome.tags[0], case)


@pytest.mark.slow
def test_nine_in_ten_package_as_written(outcomes: dict[str, Outcome]) -> None:
    packaged = sum(o.packaged for o in outcomes.values())
    assert len(outcomes) >= 30
    assert packaged / len(outcomes) >= MIN_PACKAGED_SHARE


@pytest.mark.slow
def test_the_documented_table_is_a_fresh_rendering(outcomes: dict[str, Outcome]) -> None:
    fresh = render_table(list(outcomes.values())) + "\n"
    assert DOCS.read_text(encoding="utf-8") == fresh, (
        "docs/conformance.md is stale: regenerate it with "
        "`.venv/bin/python -m tests.bentos.conformance docs/conformance.md`"
    )
