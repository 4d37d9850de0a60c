"""The parity gate: the ONNX graph must reproduce the scikit-learn pipeline, row for row.

Both run on the same canonical values (``Batch.to_frame`` for scikit-learn,
``Batch.to_feeds`` for onnxruntime) over held-out rows and adversarial probes. The gate
refuses when any label differs or any probability differs by more than the tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from skewguard.bentos.inputs import Batch
from skewguard.bentos.probes import Probe
from skewguard.errors import ConversionError, ParityError

MAX_WORST_ROWS = 5
ORT_ERRORS = (
    RuntimeError,
    ValueError,
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)


@dataclass(frozen=True, slots=True)
class ParityReport:
    """What the gate compared and found; stored with every packaged model."""

    passed: bool
    tolerance: float
    n_heldout: int
    n_probes: int
    max_abs_diff: float
    n_label_mismatches: int
    n_over_tolerance: int
    worst_rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_session(model: bytes) -> ort.InferenceSession:
    """A single-threaded CPU session (one per model; the caller owns concurrency)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except ORT_ERRORS as exc:
        raise ConversionError(
            f"onnxruntime could not load the converted graph: {exc}. A tree ensemble on float64 "
            "inputs often needs skl2onnx.sklapi.CastTransformer() before it."
        ) from exc


def run_onnx(session: ort.InferenceSession, batch: Batch) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """Labels and class probabilities from the graph."""
    try:
        labels, probabilities = session.run(None, batch.to_feeds())[:2]
    except ORT_ERRORS as exc:
        raise ConversionError(f"onnxruntime failed to run the converted graph: {exc}") from exc
    return np.asarray(labels).ravel(), np.asarray(probabilities, dtype=np.float64)


def check_parity(
    pipeline: Any,
    model: bytes,
    heldout: Batch,
    probes: tuple[Batch, list[Probe]],
    *,
    tolerance: float = 1e-4,
) -> ParityReport:
    """Compare scikit-learn and onnxruntime on held-out rows and probes."""
    session = make_session(model)
    probe_batch, probe_list = probes
    kinds = ["held-out row"] * len(heldout) + [f"{p.kind} ({p.field})" for p in probe_list]
    frames = [heldout, probe_batch] if probe_list else [heldout]
    sk_labels, sk_proba, ox_labels, ox_proba = [], [], [], []
    for batch in frames:
        labels, proba = _run_sklearn(pipeline, batch, probe_list if batch is probe_batch else [])
        sk_labels.append(labels)
        sk_proba.append(proba)
        labels, proba = run_onnx(session, batch)
        ox_labels.append(labels)
        ox_proba.append(proba)
    expected, got = np.concatenate(sk_proba), np.concatenate(ox_proba)
    if expected.shape != got.shape:
        raise ConversionError(
            f"The graph gives probabilities of shape {got.shape}, scikit-learn {expected.shape}."
        )
    diff = np.nan_to_num(np.abs(expected - got).max(axis=1), nan=np.inf)
    diff[np.isnan(expected).any(axis=1) & np.isnan(got).any(axis=1)] = 0.0
    mismatch = _labels_differ(np.concatenate(sk_labels), np.concatenate(ox_labels))
    bad = mismatch | (diff > tolerance)
    worst = np.argsort(-(diff + mismatch))[: min(MAX_WORST_ROWS, int(bad.sum()))]
    return ParityReport(
        passed=not bad.any(),
        tolerance=tolerance,
        n_heldout=len(heldout),
        n_probes=len(probe_list),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        n_label_mismatches=int(mismatch.sum()),
        n_over_tolerance=int((diff > tolerance).sum()),
        worst_rows=[
            _describe(i, kinds[i], diff[i], bool(mismatch[i]), expected[i], got[i], heldout, probe_list)
            for i in worst
        ],
    )


def _run_sklearn(
    pipeline: Any, batch: Batch, probes: list[Probe]
) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """Labels and probabilities from scikit-learn; a probe it rejects is a refusal naming the field."""
    try:
        frame = batch.to_frame()
        return np.asarray(pipeline.predict(frame)).ravel(), np.asarray(
            pipeline.predict_proba(frame), dtype=np.float64
        )
    except ValueError as exc:
        rows = (batch.take(np.array([i], dtype=np.intp)) for i in range(len(probes)))
        culprit = next((p for p, row in zip(probes, rows, strict=True) if not accepts(pipeline, row)), None)
        if culprit is None:
            raise ConversionError(f"scikit-learn failed to predict the held-out rows: {exc}") from exc
        raise ParityError(
            f"The pipeline itself rejects the probe {culprit.kind!r} in field {culprit.field!r} "
            f"({str(exc)[:200]}), but its graph would accept it silently. Make the pipeline "
            "accept such values (e.g. OneHotEncoder(handle_unknown='ignore')).",
            report={"passed": False, "field": culprit.field, "reason": culprit.kind},
        ) from exc


def accepts(pipeline: Any, batch: Batch) -> bool:
    """Whether scikit-learn predicts these rows rather than raising ``ValueError``."""
    try:
        pipeline.predict_proba(batch.to_frame())
    except ValueError:
        return False
    return True


def require_parity(report: ParityReport, name: str) -> None:
    """Raise ``ParityError`` naming the max difference, the counts and a few rows."""
    if report.passed:
        return
    rows = "; ".join(
        f"{r['probe']} → {r['field_value']} diff {r['abs_diff']:.3g}" for r in report.worst_rows[:3]
    )
    raise ParityError(
        f"Model {name!r} failed the parity gate: max probability difference {report.max_abs_diff:.3g} "
        f"(tolerance {report.tolerance:g}), {report.n_label_mismatches} label mismatches and "
        f"{report.n_over_tolerance} rows over tolerance out of {report.n_heldout + report.n_probes}. "
        f"Worst rows: {rows}. {_hint(report)}",
        report=report.to_dict(),
    )


def _labels_differ(expected: NDArray[Any], got: NDArray[Any]) -> NDArray[np.bool_]:
    """Elementwise label mismatch; boolean classes come out of the graph as 0/1."""
    if expected.dtype == np.bool_ and got.dtype.kind in "iu":
        expected = expected.astype(got.dtype)
    different: NDArray[np.bool_] = expected.astype(str) != got.astype(str)
    return different


def _hint(report: ParityReport) -> str:
    probes = " ".join(str(r["probe"]) for r in report.worst_rows)
    if "missing value" in probes:
        return (
            "The model treats missing values in a way the converter does not reproduce "
            "(e.g. a forest's native NaN routing): impute them before the model."
        )
    if "threshold" in probes or "held-out" in probes:
        return (
            "Rows at split thresholds flip: put skl2onnx.sklapi.CastTransformer() right before "
            "the tree ensemble so both sides compare float32 values."
        )
    return "Change the pipeline so that every step converts exactly, or raise the tolerance knowingly."


def _describe(
    i: int,
    kind: str,
    diff: float,
    mismatch: bool,
    expected: NDArray[Any],
    got: NDArray[Any],
    heldout: Batch,
    probes: list[Probe],
) -> dict[str, Any]:
    value: Any = f"held-out row {i}"
    if i >= len(heldout):
        probe = probes[i - len(heldout)]
        value = f"{probe.field}={_short(probe.value)}"
    return {
        "row": int(i),
        "probe": kind,
        "field_value": value,
        "abs_diff": float(diff),
        "label_mismatch": mismatch,
        "sklearn": [float(x) for x in expected],
        "onnx": [float(x) for x in got],
    }


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"<image mean {float(value.mean()):.1f}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
