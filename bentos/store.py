"""The model store: packaged models, versioned in BentoML's store, verified when loaded.

Each model is a folder of plain files — ``model.onnx``, ``input_spec.json``,
``profile.json``, ``parity.json``, ``metrics.json``, ``versions.json`` — whose sha256
digests are recorded in the BentoML model's metadata. Loading recomputes every digest and
refuses a tampered or incomplete artifact. Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import bentoml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml.exceptions import NotFound

from skewguard.bentos.spec import InputSpec
from skewguard.errors import ArtifactError, ModelNotFoundError

if TYPE_CHECKING:
    from bentoml._internal.models import ModelStore

MODEL_FILE = "model.onnx"
SPEC_FILE = "input_spec.json"
PROFILE_FILE = "profile.json"
PARITY_FILE = "parity.json"
METRICS_FILE = "metrics.json"
VERSIONS_FILE = "versions.json"
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "bentoml", "skewguard")
MODULE = "skewguard.bentos"
Task = Literal["classification", "regression"]
TASKS: tuple[str, ...] = get_args(Task)
DEFAULT_TASK: Task = "classification"
"""The task of a model stored before tasks were recorded: every such model was a classifier."""


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A verified model read back from the store."""

    tag: str
    path: Path
    onnx: bytes
    spec: InputSpec
    profile: dict[str, Any]
    parity: dict[str, Any]
    metrics: dict[str, Any]
    labels: dict[str, str]
    task: Task = DEFAULT_TASK
    """``classification`` (the graph answers labels and probabilities) or ``regression`` (numbers)."""

    @property
    def name(self) -> str:
        return self.tag.split(":", 1)[0]

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1]


def save_model(
    name: str,
    onnx: bytes,
    *,
    spec: InputSpec,
    profile: Mapping[str, Any],
    parity: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    task: Task = DEFAULT_TASK,
) -> str:
    """Write a model version and return its tag (``name:version``); ``task`` goes to its metadata."""
    documents = {
        SPEC_FILE: spec.to_dict(),
        PROFILE_FILE: dict(profile),
        PARITY_FILE: dict(parity),
        METRICS_FILE: dict(metrics or {}),
        VERSIONS_FILE: library_versions(),
    }
    files = {MODEL_FILE: onnx} | {
        file: json.dumps(doc, indent=1, sort_keys=True, allow_nan=False).encode()
        for file, doc in documents.items()
    }
    digests = {file: hashlib.sha256(data).hexdigest() for file, data in files.items()}
    with bentoml.models.create(
        name, module=MODULE, labels=dict(labels or {}), metadata={"sha256": digests, "task": task}
    ) as model:
        for file, data in files.items():
            Path(model.path_of(file)).write_bytes(data)
    make_readable(str(model.tag))
    return str(model.tag)


def make_readable(tag: str) -> None:
    """Open a stored model's folder to every reader, as its files already are (0644).

    BentoML builds a model in a private temporary folder (0700) and moves it into the store
    as it is, so a gateway running as another user — a container's — could not read it.
    """
    Path(model_store().get(tag).path).chmod(0o755)


def load_model(tag: str) -> StoredModel:
    """Read a model, verifying every file against its recorded sha256."""
    try:
        model = model_store().get(tag)
    except (NotFound, ValueError) as exc:
        raise ModelNotFoundError(
            f"No model {tag!r} in the model store; package one with `skewguard package`.", field="model"
        ) from exc
    digests = model.info.metadata.get("sha256")
    if not isinstance(digests, dict) or set(digests) != {MODEL_FILE, *_documents()}:
        raise ArtifactError(f"Model {model.tag}: the recorded file digests are missing or incomplete.")
    contents = {file: _read_verified(Path(model.path), file, str(digest)) for file, digest in digests.items()}
    docs = {file: json.loads(contents[file]) for file in _documents()}
    return StoredModel(
        tag=str(model.tag),
        path=Path(model.path),
        onnx=contents[MODEL_FILE],
        spec=InputSpec.from_dict(docs[SPEC_FILE]),
        profile=docs[PROFILE_FILE],
        parity=docs[PARITY_FILE],
        metrics=docs[METRICS_FILE],
        labels={str(k): str(v) for k, v in model.info.labels.items()},
        task=_task(model.info.metadata.get("task", DEFAULT_TASK), str(model.tag)),
    )


def _task(value: Any, tag: str) -> Task:
    if value not in TASKS:
        raise ArtifactError(f"Model {tag}: unknown task {value!r} in its metadata; expected one of {TASKS}.")
    return cast(Task, value)


def has_model(tag: str) -> bool:
    """Whether the store holds a model tagged ``tag`` (its files unchecked: ``load_model`` checks)."""
    try:
        model_store().get(tag)
    except (NotFound, ValueError):
        return False
    return True


def list_models(name: str | None = None) -> list[str]:
    """Tags of stored skewguard models, newest first."""
    models = [m for m in model_store().list(name) if m.info.module == MODULE]
    models.sort(key=lambda m: m.info.creation_time, reverse=True)
    return [str(m.tag) for m in models]


def model_store() -> ModelStore:
    """BentoML's local model store, the one ``bentoml.models.get`` and ``list`` read.

    Reads go to it directly: ``bentoml.models`` imports BentoML's usage-analytics module and its
    cloud client schemas, ~0.3 s of the gateway's start, for events only writes send. Writes
    still go through ``bentoml.models.create``.
    """
    return BentoMLContainer.model_store.get()


def _documents() -> tuple[str, ...]:
    return (SPEC_FILE, PROFILE_FILE, PARITY_FILE, METRICS_FILE, VERSIONS_FILE)


def _read_verified(folder: Path, file: str, digest: str) -> bytes:
    try:
        data = (folder / file).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"Model file {file} is missing from {folder}.") from exc
    if hashlib.sha256(data).hexdigest() != digest:
        raise ArtifactError(
            f"Model file {file} in {folder} does not match its recorded sha256: it was changed "
            "after packaging. Refusing to load it; package the model again."
        )
    return data


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the graph, for the record."""
    versions = {"python": platform.python_version()}
    for library in LIBRARIES:
        try:
            versions[library] = importlib_metadata.version(library)
        except importlib_metadata.PackageNotFoundError:
            versions[library] = "not installed"
    return versions
