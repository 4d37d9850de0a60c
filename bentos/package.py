"""``package_model``: convert a fitted pipeline, prove the graph matches it, store it.

spec ← infer from pipeline + sample      graph ← skl2onnx + exact converters (one input per field)
probes ← held-out rows + adversarial     parity gate ← the user's pipeline vs onnxruntime
steps ← each step's converter and diff   profile ← training rows
store ← graph, spec, profile, parity report (with the steps), metrics, task

Classifiers and regressors both package: the gate compares probabilities and labels of a
classifier, predictions of a regressor (absolute and relative tolerance).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from skewguard.bentos.convert import convert_pipeline, task_of
from skewguard.bentos.inputs import Batch, encode_frame
from skewguard.bentos.parity import (
    ParityReport,
    accepts,
    check_parity,
    make_session,
    require_parity,
    run_onnx,
    run_regressor,
)
from skewguard.bentos.probes import generate_probes
from skewguard.bentos.profile import build_profile
from skewguard.bentos.refusals import check_convertible
from skewguard.bentos.report import measure_steps
from skewguard.bentos.spec import FieldKind, FieldSpec, InputSpec, OnlineFeature, infer_spec
from skewguard.bentos.store import Task, save_model
from skewguard.errors import ConfigError, InputError, ParityError

DEFAULT_TOLERANCE = 1e-6
"""Classifiers: the largest probability difference the gate lets through. The exact converters
differ from scikit-learn by a few units in the last place at most; anything near this is a
converter that computes something else."""
REGRESSION_ATOL = 1e-6
REGRESSION_RTOL = 1e-6
"""Regressors: a prediction may differ by ``max(atol, rtol * |prediction|)``."""
PACKAGE_SOURCES = Path(__file__).resolve().parent
CONVERTER_DISTRIBUTIONS = ("skl2onnx", "onnx", "onnxruntime", "scikit-learn")


def packaging_fingerprint(sources: Path = PACKAGE_SOURCES) -> str:
    """sha256 of what turns a fitted pipeline into a stored graph: this package's sources and
    the versions of the converter, ONNX, onnxruntime and scikit-learn.

    A cache of packaged models keys on it, so a changed converter or gate (or an upgrade of
    skl2onnx) packages the models again instead of reusing graphs the new code would not write.
    """
    digest = hashlib.sha256()
    for path in sorted(sources.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for name in CONVERTER_DISTRIBUTIONS:
        digest.update(f"{name}=={metadata.version(name)}\0".encode())
    return digest.hexdigest()


def package_model(
    pipeline: Any,
    X_sample: pd.DataFrame,
    *,
    name: str,
    y_sample: Any = None,
    X_profile: pd.DataFrame | None = None,
    kinds: Mapping[str, FieldKind] | None = None,
    entity_key: str | None = None,
    online_features: Mapping[str, str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    metrics: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    seed: int = 0,
    regression_atol: float = REGRESSION_ATOL,
    regression_rtol: float = REGRESSION_RTOL,
) -> str:
    """Convert, verify and store ``pipeline`` (a classifier with ``predict_proba``, or a regressor,
    as it is: the gate compares the graph with this very object); return the model's store tag.

    ``X_sample``: held-out rows (the gate runs on them and on probes derived from them);
    ``X_profile``: training rows to profile (default ``X_sample``); ``y_sample`` yields metrics.
    ``online_features`` maps fields to Feast references fetched by ``entity_key`` in serving.
    ``tolerance`` bounds a classifier's probability differences, ``regression_atol`` and
    ``regression_rtol`` a regressor's: ``|Δ| ≤ max(atol, rtol·|prediction|)``. Raises
    ``UnsupportedStepError`` (naming a remedy) or ``ParityError`` when the graph would differ.
    """
    check_convertible(pipeline)
    task = task_of(pipeline, name)
    if len(X_sample) == 0:
        raise ConfigError("X_sample is empty: pass held-out rows for the parity gate.", field="X_sample")
    spec = infer_spec(pipeline, X_sample, kinds=kinds, entity_key=entity_key)
    spec = _with_nullability(pipeline, spec, encode_frame(spec, X_sample.iloc[:1]))
    heldout = _encode_heldout(spec, X_sample, name)
    model = convert_pipeline(pipeline, spec)
    limits = (tolerance, 0.0) if task == "classification" else (regression_atol, regression_rtol)
    report = _gate(pipeline, model, spec, heldout, task, limits, seed)
    require_parity(report, name)
    profile = build_profile(heldout if X_profile is None else encode_frame(spec, X_profile))
    spec = _with_online_features(spec, profile, entity_key, online_features or {})
    figures = dict(metrics or {})
    if y_sample is not None:
        figures.update(score_graph(model, heldout, np.asarray(y_sample), task))
    return save_model(
        name,
        model,
        spec=spec,
        profile=profile,
        parity=report.to_dict(),
        metrics=figures,
        labels=labels,
        task=task,
    )


def _gate(
    pipeline: Any,
    model: bytes,
    spec: InputSpec,
    heldout: Batch,
    task: Task,
    limits: tuple[float, float],
    seed: int,
) -> ParityReport:
    """The parity report of ``model`` against ``pipeline``, with each step's converter and difference."""
    probes = generate_probes(pipeline, heldout, seed=seed)
    report = check_parity(
        pipeline, model, heldout, probes, tolerance=limits[0], rel_tolerance=limits[1], task=task
    )
    steps = measure_steps(pipeline, spec, [heldout, probes[0]], final_diff=report.max_abs_diff)
    return dataclasses.replace(report, steps=[step.to_dict() for step in steps], probe_seed=seed)


def score_graph(model: bytes, batch: Batch, y: np.ndarray, task: Task = "classification") -> dict[str, float]:
    """The graph on labelled rows: accuracy, log loss and (two classes) ROC AUC; or R², MAE, RMSE."""
    if task == "regression":
        predicted = run_regressor(make_session(model), batch)
        return {
            "n_rows": float(len(y)),
            "r2": float(r2_score(y, predicted)),
            "mae": float(mean_absolute_error(y, predicted)),
            "rmse": float(root_mean_squared_error(y, predicted)),
        }
    labels, proba = run_onnx(make_session(model), batch)
    figures = {"n_rows": float(len(y)), "accuracy": float(accuracy_score(y.astype(str), labels.astype(str)))}
    if proba.shape[1] == 2 and len(np.unique(y)) == 2:
        figures["roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
        figures["log_loss"] = float(log_loss(y, proba))
    return figures


def _encode_heldout(spec: InputSpec, X: pd.DataFrame, name: str) -> Batch:
    try:
        return encode_frame(spec, X)
    except InputError as exc:
        if exc.field is None or spec.get(exc.field).nullable:
            raise
        raise ParityError(
            f"Model {name!r}: the sample has missing values in {exc.field!r}, but the pipeline "
            "itself rejects missing values there (scikit-learn raises on NaN). Impute them "
            "before the model, e.g. with sklearn.impute.SimpleImputer, which converts.",
            report={"passed": False, "field": exc.field, "reason": "missing values"},
        ) from exc


def _with_nullability(pipeline: Any, spec: InputSpec, row: Batch) -> InputSpec:
    """Mark numeric and datetime fields the pipeline rejects NaN in as non-nullable."""
    fields: list[FieldSpec] = []
    for field in spec:
        nullable = field.kind in ("numeric", "datetime", "categorical", "text")
        if field.kind in ("numeric", "datetime"):
            columns = dict(row.columns)
            columns[field.name] = np.full((1, 1), np.nan)
            nullable = accepts(pipeline, Batch(spec, columns))
        fields.append(dataclasses.replace(field, nullable=nullable))
    return dataclasses.replace(spec, fields=tuple(fields))


def _with_online_features(
    spec: InputSpec, profile: Mapping[str, Any], entity_key: str | None, refs: Mapping[str, str]
) -> InputSpec:
    if refs and not entity_key:
        raise ConfigError("online_features need an entity_key to look them up by.", field="entity_key")
    online = []
    for name, ref in refs.items():
        if name not in spec.names or spec.get(name).kind != "numeric":
            raise ConfigError(
                f"Online feature {name!r} must be a numeric input field of the model.", field=name
            )
        online.append(
            OnlineFeature(name=name, ref=ref, default=float(profile["fields"][name].get("median", 0.0)))
        )
    return dataclasses.replace(spec, online_features=tuple(online))
