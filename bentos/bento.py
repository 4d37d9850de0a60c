"""Bentos: one packaged model + the generic ONNX service, built into a deployable Bento.

``build_bento`` writes a bentofile for ``skewguard.bentos.service:OnnxModelService`` that records the
model three ways — in the Bento's model list (so it travels with the Bento), as the build
argument ``model`` (applied whenever BentoML loads the Bento, so ``bentoml serve <bento>``
serves exactly that version) and as the ``SKEWGUARD_MODEL`` environment variable (set in
the container image). Package locking is off: the requirements are the versions installed
here, pinned, so a build resolves nothing over the network. (BentoML 1.4 still calls
``uv`` while building and ``pip install``s it into the environment when it is missing.)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException

from skewguard.bentos.store import load_model
from skewguard.errors import ConfigError

SERVICE = "skewguard.bentos.service:OnnxModelService"
MODEL_ENV = "SKEWGUARD_MODEL"
MODEL_ARGUMENT = "model"
SERVE_PACKAGES = ("onnxruntime", "onnx", "protobuf", "numpy", "pandas", "pillow", "pydantic")
"""What ``skewguard.bentos.service`` imports (BentoML adds its own pinned requirement)."""
SOURCES = ("bentos/**/*.py", "skewguard/**/*.py")
SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding the ``skewguard.bentos`` and ``skewguard`` packages: the default build context."""


def build_bento(tag: str, *, build_dir: Path | None = None) -> str:
    """Build a Bento serving the stored model ``tag``; return the Bento's tag.

    ``build_dir`` is the build context, the folder holding ``bentos/`` and ``skewguard/``
    (default: where this package is installed from).
    """
    model = load_model(tag)  # resolves ``:latest`` and refuses a tampered artifact up front
    context = (build_dir or SOURCE_ROOT).resolve()
    if not (context / "bentos" / "service.py").is_file():
        raise ConfigError(f"Build folder {context} does not hold bentos/service.py.", field="build_dir")
    config = bentofile(model.tag)
    with tempfile.TemporaryDirectory(prefix="skewguard-bento-") as folder, _build_scope(model.tag):
        path = Path(folder) / "bentofile.yaml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        try:
            bento = bentoml.bentos.build_bentofile(
                str(path), build_ctx=str(context), args={MODEL_ARGUMENT: model.tag}, reload=True
            )
        except BentoMLException as exc:
            raise ConfigError(f"Building the Bento for {model.tag} failed: {exc}", field="bento") from exc
    return str(bento.tag)


def bentofile(model_tag: str) -> dict[str, Any]:
    """The build options of a Bento for ``model_tag`` (a ``bentofile.yaml`` as a dict)."""
    name, _, version = model_tag.partition(":")
    return {
        "service": SERVICE,
        "name": f"{name}-service",
        "description": f"skewguard: the ONNX graph of model {model_tag}, served by {SERVICE}.",
        "labels": {"skewguard-model": name, "skewguard-model-version": version},
        "include": list(SOURCES),
        "exclude": ["**/__pycache__/"],
        "python": {"packages": serve_requirements(), "lock_packages": False},
        "models": [model_tag],
        "envs": [{"name": MODEL_ENV, "value": model_tag}],
        "args": {MODEL_ARGUMENT: model_tag},
    }


def serve_requirements() -> list[str]:
    """What the service imports at serve time, pinned to the versions installed here."""
    return [f"{p}=={importlib_metadata.version(p)}" for p in SERVE_PACKAGES]


def served_model_tag(environ: Mapping[str, str] | None = None) -> str:
    """The model a service process serves: the Bento's ``model`` argument, else ``SKEWGUARD_MODEL``.

    Outside a Bento (``bentoml serve skewguard.bentos.service:OnnxModelService``) there is no
    argument, and the environment variable must name the model.
    """
    env = os.environ if environ is None else environ
    argument = getattr(bentoml.use_arguments(), MODEL_ARGUMENT, None)
    tag = argument or env.get(MODEL_ENV)
    if not tag:
        raise ConfigError(
            f"No model to serve: build a Bento for one (`skewguard bento build --model TAG`) or set "
            f"{MODEL_ENV} to a packaged model's tag.",
            field=MODEL_ENV,
        )
    return str(tag)


def serve_command(bento_tag: str, port: int, *, host: str = "127.0.0.1") -> list[str]:
    """The ``bentoml serve`` command line for a built Bento, run by this interpreter."""
    return [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", host, "--port", str(port)]


@contextmanager
def _build_scope(model_tag: str) -> Iterator[None]:
    """Point the service at ``model_tag`` while it is imported for the build, then restore.

    Building sets BentoML's process-wide Bento arguments; putting them back keeps a later
    import of the service in this process from silently serving the last model built.
    """
    from bentoml._internal.utils.args import set_arguments  # no public setter in 1.4

    previous_env = os.environ.get(MODEL_ENV)
    previous_arguments = dict(vars(bentoml.use_arguments()))
    os.environ[MODEL_ENV] = model_tag
    try:
        yield
    finally:
        set_arguments(previous_arguments)
        if previous_env is None:
            os.environ.pop(MODEL_ENV, None)
        else:
            os.environ[MODEL_ENV] = previous_env
