"""The Kubernetes manifests as ``kubectl kustomize`` renders them, per overlay."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gateway.conftest import anyio_backend, champion_tag, demo  # noqa: F401 - the session's fixtures

PROJECT = Path(__file__).resolve().parents[2]
KUSTOMIZE = PROJECT / "deploy" / "kubernetes"
OVERLAYS = ("co-located", "remote")


def render(overlay: str | Path) -> str:
    """``kubectl kustomize`` of an overlay folder (a name under overlays/, or a path)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render the manifests (`kubectl kustomize`); install it.")
    folder = overlay if isinstance(overlay, Path) else KUSTOMIZE / "overlays" / overlay
    done = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """(overlay, its rendered objects)."""
    return request.param, objects(render(request.param))


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment, Job or CronJob."""
    if doc["kind"] == "CronJob":
        spec: dict[str, Any] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    template: dict[str, Any] = doc["spec"]["template"]["spec"]
    return template
