"""``package_model``: convert a fitted pipeline, prove the graph matches it, store it.

spec ← infer from pipeline + sample      graph ← skl2onnx (one input per field)
probes ← held-out rows + adversarial     parity gate ← sklearn vs onnxruntime
profile ← training rows                  store ← graph, spec, profile, report, metrics
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
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from skewguard.bentos.convert import convert_pipeline, is_plain_tree_model
from skewguard.bentos.inputs import Batch, encode_frame
from skewguard.bentos.parity import accepts, check_parity, make_session, require_parity, run_onnx
from skewguard.bentos.probes import generate_probes
from skewguard.bentos.profile import build_profile
from skewguard.bentos.spec import FieldKind, FieldSpec, InputSpec, OnlineFeature, infer_spec
from skewguard.bentos.store import save_model
from skewguard.errors import ConfigError, InputError, ParityError

DEFAULT_TOLERANCE = 1e-4
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
) -> str:
    """Convert, verify and store ``pipeline``; return the model's store tag.

    ``X_sample`` are held-out rows (the gate runs on them and on probes derived from them);
    ``X_profile`` the training rows to profile (defaults to ``X_sample``); ``y_sample``,
    when given, yields metrics of the stored graph. ``online_features`` maps input
    fields to Feast references (``"view:feature"``) fetched by ``entity_key`` in serving.
    Raises ``ParityError`` when the graph does not reproduce the pipeline.
    """
    _check_classifier(pipeline, name)
    if len(X_sample) == 0:
        raise ConfigError("X_sample is empty: pass held-out rows for the parity gate.", field="X_sample")
    spec = infer_spec(pipeline, X_sample, kinds=kinds, entity_key=entity_key)
    spec = _with_nullability(pipeline, spec, encode_frame(spec, X_sample.iloc[:1]))
    heldout = _encode_heldout(spec, X_sample, name)
    model = convert_pipeline(pipeline, spec)
    report = check_parity(
        pipeline, model, heldout, generate_probes(pipeline, heldout, seed=seed), tolerance=tolerance
    )
    require_parity(report, name)
    profile = build_profile(heldout if X_profile is None else encode_frame(spec, X_profile))
    spec = _with_online_features(spec, profile, entity_key, online_features or {})
    figures = dict(metrics or {})
    if y_sample is not None:
        figures.update(score_graph(model, heldout, np.asarray(y_sample)))
    return save_model(
        name, model, spec=spec, profile=profile, parity=report.to_dict(), metrics=figures, labels=labels
    )


def score_graph(model: bytes, batch: Batch, y: np.ndarray) -> dict[str, float]:
    """Accuracy, log loss and (for two classes) ROC AUC of the graph on labelled rows."""
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
            f"Model {name!r}: the sample has missing values in {exc.field!r}, and the graph "
            "cannot reproduce how this model treats them (a forest's or gradient boosting's "
            "native NaN routing does not convert). Impute them before the model.",
            report={"passed": False, "field": exc.field, "reason": "missing values"},
        ) from exc


def _check_classifier(pipeline: Any, name: str) -> None:
    if not (hasattr(pipeline, "predict_proba") and hasattr(pipeline, "classes_")):
        raise ConfigError(
            f"Model {name!r}: expected a fitted scikit-learn classifier pipeline "
            "(with predict_proba and classes_).",
            field="pipeline",
        )


def _with_nullability(pipeline: Any, spec: InputSpec, row: Batch) -> InputSpec:
    """Mark numeric and datetime fields the graph cannot take missing as non-nullable.

    That is every such field the pipeline rejects NaN in, and every one in front of a
    forest or gradient boosting model, whose native NaN routing does not convert.
    """
    fields: list[FieldSpec] = []
    head = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    numbers_nullable = not is_plain_tree_model(head)
    for field in spec:
        nullable = field.kind in ("numeric", "datetime", "categorical", "text")
        if field.kind in ("numeric", "datetime") and not numbers_nullable:
            nullable = False
        elif field.kind in ("numeric", "datetime"):
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
