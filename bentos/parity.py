"""The parity gate: the ONNX graph must reproduce the scikit-learn pipeline, row for row.

Both run on the same canonical values (``Batch.to_frame`` for scikit-learn,
``Batch.to_feeds`` for onnxruntime) over held-out rows and adversarial probes, always
against the user's own fitted pipeline. For a classifier the gate refuses when any label
differs or any probability differs by more than ``tolerance``; for a regressor, when any
prediction differs by more than ``max(tolerance, rel_tolerance * |prediction|)``.
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
    task: str = "classification"
    rel_tolerance: float = 0.0
    """Regression only: the allowed difference also scales with the prediction's magnitude."""
    steps: list[dict[str, Any]] = field(default_factory=list)
    """Per step of the pipeline: how it was converted and the largest difference measured."""
    max_scaled_diff: float = 0.0
    """The largest ``|Δ| / max(1, |expected|)``: for a regressor, the difference relative to its scale."""
    n_refused_by_both: int = 0
    """Probes scikit-learn rejects and the graph answers with NaN (which serving refuses too)."""
    rejected_fields: dict[str, list[str]] = field(default_factory=dict)
    """Per field, the kinds of probe value scikit-learn rejects (e.g. an unseen category)."""
    probe_seed: int = 0
    """The seed of the random probes (``SKEWGUARD_PARITY_PROBE_SEED``): the same seed, the same probes."""

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
        raise ConversionError(f"onnxruntime could not load the converted graph: {exc}") from exc


def run_onnx(session: ort.InferenceSession, batch: Batch) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """Labels and class probabilities from the graph."""
    try:
        labels, probabilities = session.run(None, batch.to_feeds())[:2]
    except ORT_ERRORS as exc:
        raise ConversionError(f"onnxruntime failed to run the converted graph: {exc}") from exc
    return np.asarray(labels).ravel(), np.asarray(probabilities, dtype=np.float64)


def run_regressor(session: ort.InferenceSession, batch: Batch) -> NDArray[np.float64]:
    """The graph's predictions, one float per row."""
    try:
        (predictions,) = session.run(None, batch.to_feeds())[:1]
    except ORT_ERRORS as exc:
        raise ConversionError(f"onnxruntime failed to run the converted graph: {exc}") from exc
    return np.asarray(predictions, dtype=np.float64).reshape(len(batch), -1)[:, 0]


def run_graph(
    session: ort.InferenceSession, batch: Batch, task: str
) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """(labels, probabilities) of a classifier; (empty labels, predictions as one column) of a regressor."""
    if task == "classification":
        return run_onnx(session, batch)
    return np.empty(0), run_regressor(session, batch)[:, None]


def check_parity(
    pipeline: Any,
    model: bytes,
    heldout: Batch,
    probes: tuple[Batch, list[Probe]],
    *,
    tolerance: float = 1e-4,
    rel_tolerance: float = 0.0,
    task: str = "classification",
) -> ParityReport:
    """Compare the user's pipeline and onnxruntime on held-out rows and probes.

    A probe the pipeline itself rejects (scikit-learn raises) must make the graph answer
    NaN, which serving refuses as well; such rows are left out of the comparison. A graph
    that answers such a probe with a number would answer silently: that is a refusal.
    """
    probe_list = probes[1]
    kinds = ["held-out row"] * len(heldout) + [f"{p.kind} ({p.field})" for p in probe_list]
    sk_labels, expected, ox_labels, got, skipped = _both_outputs(
        pipeline, make_session(model), heldout, probes, task
    )
    diff = np.nan_to_num(np.abs(expected - got).max(axis=1), nan=np.inf)
    diff[(np.isnan(expected).any(axis=1) & np.isnan(got).any(axis=1)) | skipped] = 0.0
    magnitude = np.nan_to_num(np.abs(expected).max(axis=1))
    allowed = np.maximum(tolerance, rel_tolerance * magnitude)
    scaled = diff / np.maximum(1.0, magnitude)
    mismatch = _labels_differ(sk_labels, ox_labels, len(diff)) & ~skipped
    over = diff > allowed
    bad = mismatch | over
    worst = np.argsort(-(diff / allowed + mismatch))[: min(MAX_WORST_ROWS, int(bad.sum()))]
    return ParityReport(
        passed=not bad.any(),
        tolerance=tolerance,
        n_heldout=len(heldout),
        n_probes=len(probe_list),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        max_scaled_diff=float(scaled.max()) if scaled.size else 0.0,
        n_label_mismatches=int(mismatch.sum()),
        n_over_tolerance=int(over.sum()),
        worst_rows=[
            _describe(i, kinds[i], diff[i], bool(mismatch[i]), expected[i], got[i], heldout, probe_list)
            for i in worst
        ],
        task=task,
        rel_tolerance=rel_tolerance,
        n_refused_by_both=int(skipped.sum()),
        rejected_fields=_rejected_fields(skipped[len(heldout) :], probe_list),
    )


def _both_outputs(
    pipeline: Any, session: ort.InferenceSession, heldout: Batch, probes: tuple[Batch, list[Probe]], task: str
) -> tuple[NDArray[Any], NDArray[np.float64], NDArray[Any], NDArray[np.float64], NDArray[np.bool_]]:
    """scikit-learn's labels and values, the graph's, and the rows scikit-learn rejects (all batches)."""
    probe_batch, probe_list = probes
    sk_labels, sk_values, ox_labels, ox_values, rejected = [], [], [], [], []
    for batch in [heldout, probe_batch] if probe_list else [heldout]:
        labels, values, refused = _run_sklearn(pipeline, batch, task)
        if batch is heldout and refused.any():
            raise ConversionError("scikit-learn failed to predict some of the held-out rows.")
        sk_labels.append(labels)
        sk_values.append(values)
        rejected.append(refused)
        labels, values = run_graph(session, batch, task)
        _require_refusal(values, refused, probe_list)
        ox_labels.append(labels)
        ox_values.append(values)
    expected, got = np.concatenate(sk_values), np.concatenate(ox_values)
    if expected.shape != got.shape:
        raise ConversionError(f"The graph gives outputs of shape {got.shape}, scikit-learn {expected.shape}.")
    return np.concatenate(sk_labels), expected, np.concatenate(ox_labels), got, np.concatenate(rejected)


def _rejected_fields(rejected: NDArray[np.bool_], probes: list[Probe]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for index in np.flatnonzero(rejected):
        probe = probes[int(index)]
        kinds = fields.setdefault(probe.field, [])
        if probe.kind not in kinds:
            kinds.append(probe.kind)
    return fields


def _run_sklearn(
    pipeline: Any, batch: Batch, task: str
) -> tuple[NDArray[Any], NDArray[np.float64], NDArray[np.bool_]]:
    """Labels and probabilities (or predictions) from scikit-learn, and the rows it rejects (NaN there)."""
    try:
        return (*_predict(pipeline, batch.to_frame(), task), np.zeros(len(batch), dtype=bool))
    except ValueError:
        rejected = _rejected_rows(pipeline, batch, np.arange(len(batch), dtype=np.intp))
    keep = np.flatnonzero(~rejected)
    n_outputs = len(pipeline.classes_) if task == "classification" else 1
    labels, values = np.empty(len(batch), dtype=object), np.full((len(batch), n_outputs), np.nan)
    if keep.size:
        kept_labels, values[keep] = _predict(pipeline, batch.take(keep).to_frame(), task)
        labels = np.empty(0) if task != "classification" else labels
        if task == "classification":
            labels[keep] = kept_labels
    return (labels if task == "classification" else np.empty(0)), values, rejected


def _predict(pipeline: Any, frame: Any, task: str) -> tuple[NDArray[Any], NDArray[np.float64]]:
    predictions = np.asarray(pipeline.predict(frame)).ravel()
    if task != "classification":
        return np.empty(0), predictions.astype(np.float64)[:, None]
    return predictions, np.asarray(pipeline.predict_proba(frame), dtype=np.float64)


def _rejected_rows(pipeline: Any, batch: Batch, index: NDArray[np.intp]) -> NDArray[np.bool_]:
    """Which rows of ``batch`` scikit-learn refuses to predict, found by halving (few calls)."""
    rejected = np.zeros(len(batch), dtype=bool)
    pending = [index]
    while pending:
        part = pending.pop()
        if len(part) == 0 or accepts(pipeline, batch.take(part)):
            continue
        if len(part) == 1:
            rejected[part[0]] = True
            continue
        pending += [part[: len(part) // 2], part[len(part) // 2 :]]
    return rejected


def _require_refusal(values: NDArray[np.float64], rejected: NDArray[np.bool_], probes: list[Probe]) -> None:
    """Every row scikit-learn rejects must come out of the graph as NaN, never as a number."""
    answered = rejected & np.isfinite(values).any(axis=1)
    if not answered.any():
        return
    culprit = probes[int(np.flatnonzero(answered)[0])]
    raise ParityError(
        f"The pipeline itself rejects the probe {culprit.kind!r} in field {culprit.field!r} "
        f"(value {_short(culprit.value)}: scikit-learn raises), but its graph would answer it "
        "silently. Make the pipeline accept such values (e.g. OneHotEncoder(handle_unknown='ignore')).",
        report={"passed": False, "field": culprit.field, "reason": culprit.kind},
    )


def accepts(pipeline: Any, batch: Batch) -> bool:
    """Whether scikit-learn predicts these rows rather than raising ``ValueError``."""
    try:
        pipeline.predict(batch.to_frame())
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
    what = "probability" if report.task == "classification" else "prediction"
    limit = f"{report.tolerance:g}" + (f", relative {report.rel_tolerance:g}" if report.rel_tolerance else "")
    raise ParityError(
        f"Model {name!r} failed the parity gate: max {what} difference {report.max_abs_diff:.3g} "
        f"(tolerance {limit}), {report.n_label_mismatches} label mismatches and "
        f"{report.n_over_tolerance} rows over tolerance out of {report.n_heldout + report.n_probes}. "
        f"Worst rows: {rows}. {_hint(report)}",
        report=report.to_dict(),
    )


def _labels_differ(expected: NDArray[Any], got: NDArray[Any], n_rows: int) -> NDArray[np.bool_]:
    """Elementwise label mismatch (none for a regressor); boolean classes come out of the graph as 0/1."""
    if expected.size == 0 and got.size == 0:
        return np.zeros(n_rows, dtype=bool)
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
    return (
        "A step computes differently in onnxruntime than in scikit-learn: `skewguard package` "
        "prints each step's converter and measured difference; change that step, or raise the "
        "tolerance knowingly."
    )


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
