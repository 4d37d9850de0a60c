"""The packaging report: per step of the pipeline, how it was converted and the difference measured.

``measure_steps`` converts each prefix of the pipeline (its transformers up to that step)
with the same converters as the whole graph and compares its output with the pipeline's
own ``transform`` on the held-out rows and the gate's probes; a ColumnTransformer's
transformers are measured on their slice of its output. The final estimator's figure is
the gate's. The report is stored inside the parity report; ``render_report`` turns it
(or a refusal) into the text ``skewguard package`` prints.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from skewguard.bentos.convert import convert_transform
from skewguard.bentos.exact import describe_conversion
from skewguard.bentos.inputs import Batch
from skewguard.bentos.parity import make_session
from skewguard.bentos.spec import InputSpec
from skewguard.errors import ConversionError, SkewguardError, UnsupportedStepError


@dataclass(frozen=True, slots=True)
class StepReport:
    """One step: its path in the pipeline, its class, its converter and the largest difference."""

    step: str
    estimator: str
    conversion: str
    max_abs_diff: float | None
    """None when the step was not measured on its own (e.g. inside a nested pipeline)."""
    depth: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: an infinite difference (a number against NaN) is written ``"inf"``."""
        data = asdict(self)
        if data["max_abs_diff"] is not None and not np.isfinite(data["max_abs_diff"]):
            data["max_abs_diff"] = "inf"
        return data


def _children(estimator: Any) -> Iterator[tuple[str, Any, slice | None]]:
    """A ColumnTransformer's transformers with their output slices; a Pipeline's steps."""
    slices = getattr(estimator, "output_indices_", {})
    for name, transformer, *_ in getattr(estimator, "transformers_", []):
        if transformer not in ("drop", None):
            yield name, transformer, slices.get(name)
    for name, step in getattr(estimator, "steps", []):
        yield name, step, None


def describe_steps(pipeline: Any) -> list[StepReport]:
    """Every step and nested transformer with its converter, nothing measured."""
    top = list(getattr(pipeline, "steps", [(type(pipeline).__name__, pipeline)]))
    reports: list[StepReport] = []
    for name, step in top:
        reports += _describe(str(name), step, 0)
    return reports


def _describe(path: str, step: Any, depth: int) -> list[StepReport]:
    rows = [StepReport(path, _class_name(step), _how(step), None, depth)]
    for name, child, _ in _children(step):
        rows += _describe(f"{path}/{name}", child, depth + 1)
    return rows


def _class_name(step: Any) -> str:
    return "passthrough" if step == "passthrough" else type(step).__name__


def _how(step: Any, *, final: bool = False) -> str:
    if step == "passthrough":
        return "columns passed through"
    if hasattr(step, "transformers_"):
        return "columns selected and concatenated (skl2onnx)"
    if hasattr(step, "steps"):
        return "its steps, in order"
    return describe_conversion(step, final=final)


def measure_steps(
    pipeline: Any, spec: InputSpec, batches: Sequence[Batch], *, final_diff: float
) -> list[StepReport]:
    """``describe_steps`` with each transformer step's largest difference measured on ``batches``."""
    top = list(getattr(pipeline, "steps", []))
    reports: list[StepReport] = []
    for i, (name, step) in enumerate(top[:-1]):
        got, expected = _prefix_outputs(pipeline[: i + 1], spec, batches)
        reports.append(StepReport(str(name), _class_name(step), _how(step), _max_diff(got, expected)))
        for child, transformer, columns in _children(step):
            diff = (
                None if columns is None or got is None else _max_diff(got[:, columns], expected[:, columns])
            )
            reports.append(
                StepReport(f"{name}/{child}", _class_name(transformer), _how(transformer), diff, 1)
            )
            reports += _describe(f"{name}/{child}", transformer, 1)[1:]
    name, last = top[-1] if top else (type(pipeline).__name__, pipeline)
    reports.append(StepReport(str(name), _class_name(last), _how(last, final=True), final_diff))
    return reports


def _prefix_outputs(prefix: Any, spec: InputSpec, batches: Sequence[Batch]) -> tuple[Any, Any]:
    """The prefix's graph output and scikit-learn's ``transform``, dense, over all batches."""
    try:
        session = make_session(convert_transform(prefix, spec))
    except SkewguardError:
        return None, None
    got, expected = [], []
    for batch in batches:
        try:
            kept, out = batch, prefix.transform(batch.to_frame()) if len(batch) else None
        except ValueError:
            kept = batch.take(np.flatnonzero(~_rejected(prefix, batch)))
            out = prefix.transform(kept.to_frame()) if len(kept) else None
        if out is None:
            continue
        got.append(np.asarray(session.run(None, kept.to_feeds())[0]))
        expected.append(np.asarray(out.toarray() if hasattr(out, "toarray") else out))
    if not got:
        return None, None
    return np.concatenate(got), np.concatenate(expected)


def _rejected(prefix: Any, batch: Batch) -> NDArray[np.bool_]:
    """Rows the prefix's ``transform`` raises on (the gate left them out too), found by halving."""
    rejected = np.zeros(len(batch), dtype=bool)
    pending = [np.arange(len(batch), dtype=np.intp)]
    while pending:
        part = pending.pop()
        try:
            prefix.transform(batch.take(part).to_frame())
        except ValueError:
            if len(part) == 1:
                rejected[part[0]] = True
            else:
                pending += [part[: len(part) // 2], part[len(part) // 2 :]]
    return rejected


def _max_diff(got: NDArray[Any] | None, expected: NDArray[Any] | None) -> float | None:
    if got is None or expected is None or got.shape != expected.shape:
        return None if got is None else float("inf")
    if got.dtype.kind in "OSU" or expected.dtype.kind in "OSU":
        return 0.0 if np.array_equal(got.astype(str), expected.astype(str)) else float("inf")
    a, b = got.astype(np.float64), expected.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))  # equal infinities too
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
    return float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0


# --- text -------------------------------------------------------------------------------------


def _figure(value: float | str | None) -> str:
    if value is None or isinstance(value, str):
        return value or "—"
    return "0" if value == 0 else f"{value:.2g}"


def render_steps(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The per-step table: step, estimator, converter, largest difference."""
    width = max([len("  " * int(s.get("depth", 0)) + str(s["step"])) for s in steps] + [4])
    kind = max([len(str(s["estimator"])) for s in steps] + [9])
    lines = [f"{'step':<{width}}  {'estimator':<{kind}}  {'max |Δ|':>8}  converted with"]
    for s in steps:
        label = "  " * int(s.get("depth", 0)) + str(s["step"])
        diff = _figure(s.get("max_abs_diff"))
        lines.append(f"{label:<{width}}  {s['estimator']!s:<{kind}}  {diff:>8}  {s['conversion']}")
    return lines


def render_report(name: str, parity: Mapping[str, Any]) -> str:
    """What ``skewguard package`` prints for a packaged model (or one the gate refused)."""
    what = "|Δp|" if parity.get("task", "classification") == "classification" else "|Δ|"
    outcome = "packaged" if parity.get("passed") else "refused by the parity gate"
    checked = int(parity.get("n_heldout", 0)) + int(parity.get("n_probes", 0))
    head = (
        f"{name} ({parity.get('task', 'classification')}): {outcome}; max {what} "
        f"{_figure(parity.get('max_abs_diff'))} over {checked:,} rows ({parity.get('n_heldout', 0):,} "
        f"held-out + {parity.get('n_probes', 0):,} probes), tolerance {parity.get('tolerance', 0):g}"
    )
    if parity.get("rel_tolerance"):
        head += f" or {parity['rel_tolerance']:g}·|y|"
    head += f", {parity.get('n_label_mismatches', 0)} label mismatches"
    return "\n".join([head, *render_steps(parity.get("steps", []))])


def render_refusal(name: str, pipeline: Any, error: ConversionError) -> str:
    """What ``skewguard package`` prints when a step cannot convert: the steps and the refusal."""
    steps = [s.to_dict() for s in describe_steps(pipeline)]
    if isinstance(error, UnsupportedStepError):
        for s in steps:
            if s["step"] == error.step or s["step"].endswith("/" + error.step):
                s["conversion"] = f"REFUSED: {error.reason}"
        return "\n".join([f"{name}: refused at step {error.step!r}", *render_steps(steps)])
    return "\n".join([f"{name}: not converted", *render_steps(steps)])


def render_outcome(
    name: str, pipeline: Any, *, tag: str | None = None, error: Exception | None = None
) -> str:
    """The report ``skewguard package`` prints: of the stored model ``tag``, or of the refusal ``error``."""
    from skewguard.bentos.store import load_model
    from skewguard.errors import ParityError

    if tag is not None:
        return render_report(tag, load_model(tag).parity)
    if isinstance(error, ParityError) and error.report.get("steps"):
        return render_report(name, error.report)
    if isinstance(error, ConversionError):
        return render_refusal(name, pipeline, error)
    return f"{name}: {error}"
