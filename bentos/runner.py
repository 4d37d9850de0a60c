"""The ONNX runner: one stored model, one single-threaded session, raw rows in, predictions out.

This is what a Bento service (and the gateway, co-located) calls per request. It holds no
scikit-learn and loads no pickle: the graph, the input spec and the class labels all come
from the hash-verified files of the model store. Class labels are read from the graph
itself — the classifier operator's ``classlabels_*`` attribute, or the constant table the
label output is looked up in — so they cannot drift from the probabilities' column order.
A classifier answers ``{"label", "probabilities"}`` per row, a regressor ``{"prediction"}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from skewguard.bentos.classes import CLASSES_KEY, TASK_KEY, native, read_classes
from skewguard.bentos.inputs import Batch, encode_rows
from skewguard.bentos.parity import make_session, run_onnx, run_regressor
from skewguard.bentos.spec import InputSpec
from skewguard.bentos.store import StoredModel, Task, load_model
from skewguard.errors import ArtifactError, ConversionError, InputError, ModelOutputError


class OnnxRunner:
    """Predictions of one stored model: ``predict_rows`` for JSON rows, ``predict_batch`` for a Batch."""

    def __init__(self, model: StoredModel) -> None:
        self.model_tag = model.tag
        self.spec: InputSpec = model.spec
        self.task: Task = model.task
        self._rejected_fields: dict[str, list[str]] = dict(model.parity.get("rejected_fields", {}))
        self._session = make_session(model.onnx)
        _check_task(self._session, model)
        self.classes_: tuple[Any, ...] = (
            () if self.task == "regression" else _classes(self._session, model.onnx)
        )
        self._keys = tuple(str(c) for c in self.classes_)
        self._allowed_extra = (model.spec.entity_key,) if model.spec.entity_key else ()

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
        A regressor answers ``[{"prediction": <float>}, ...]``.
        """
        if batch.spec is not self.spec:  # a cascade's union batch: this graph's own columns
            batch = Batch(self.spec, {name: batch.columns[name] for name in self.spec.names})
        if self.task == "regression":
            return self._predict_numbers(batch)
        labels, probabilities = run_onnx(self._session, batch)
        if probabilities.shape != (len(batch), len(self._keys)):
            raise ConversionError(
                f"Model {self.model_tag}: the graph returned probabilities of shape "
                f"{probabilities.shape} for {len(batch)} rows and {len(self._keys)} classes."
            )
        if not np.isfinite(probabilities).all():
            row = int(np.flatnonzero(~np.isfinite(probabilities).all(axis=1))[0])
            raise self._unscorable(row, f"probabilities {probabilities[row].tolist()}")
        keys = self._keys  # whole arrays to Python at once: per row, this cost ~3x as much
        natives = labels.tolist() if labels.dtype != object else [native(label) for label in labels]
        return [
            {"label": label, "probabilities": dict(zip(keys, row, strict=True))}
            for label, row in zip(natives, probabilities.tolist(), strict=True)
        ]

    def _predict_numbers(self, batch: Batch) -> list[dict[str, Any]]:
        predictions = run_regressor(self._session, batch)
        if not np.isfinite(predictions).all():
            row = int(np.flatnonzero(~np.isfinite(predictions))[0])
            raise self._unscorable(row, f"prediction {predictions[row]}")
        return [{"prediction": value} for value in predictions.tolist()]

    def _unscorable(self, row: int, answer: str) -> InputError | ModelOutputError:
        """The error for a NaN answer: the request's, where the pipeline itself rejects some values
        (the gate found the graph answers NaN exactly there), else the graph's."""
        if self._rejected_fields:
            fields = ", ".join(
                f"{name!r} ({', '.join(kinds)})" for name, kinds in self._rejected_fields.items()
            )
            return InputError(
                f"Model {self.model_tag} cannot score row {row}: its pipeline rejects some values "
                f"of {fields}, as scikit-learn raises on them; send values like those it was trained on.",
                field=next(iter(self._rejected_fields)),
            )
        return ModelOutputError(
            f"Model {self.model_tag} answered non-finite {answer} for row {row}; "
            "the graph is broken, not the request."
        )


def _classes(session: Any, model: bytes) -> tuple[Any, ...]:
    """The graph's class labels: from its metadata, or found in the graph when it has none."""
    recorded = session.get_modelmeta().custom_metadata_map.get(CLASSES_KEY)
    if recorded is not None:
        return tuple(json.loads(recorded))
    return read_classes(model)


def _check_task(session: Any, model: StoredModel) -> None:
    """The task in the store's metadata must be the one the (hash-verified) graph records."""
    recorded = session.get_modelmeta().custom_metadata_map.get(TASK_KEY, "classification")
    if recorded != model.task:
        raise ArtifactError(
            f"Model {model.tag}: the store says {model.task!r} but its graph was packaged for "
            f"{recorded!r}; package the model again."
        )
