"""The Kubernetes manifests as ``kubectl kustomize`` renders them, per overlay."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from skewguard.bentos.manifest import compose_manifest, load_manifest, promote, save_manifest
from tests.conftest import package_cascade_models
from tests.gateway.conftest import anyio_backend, demo  # noqa: F401 - the session's fixtures

PROJECT = Path(__file__).resolve().parents[2]
KUSTOMIZE = PROJECT / "deploy" / "kubernetes"
OVERLAYS = ("co-located", "remote")
CASCADE = "deploytest"
ROUTES = {"1": "reseller", "0": "retail"}
PREDICT = f"/v1/cascades/{CASCADE}/predict"


@pytest.fixture(scope="session")
def champion_tag(demo: Any) -> str:  # noqa: F811 - this folder's own champion
    """A router and two specialists (linear heads, small data) of cascade ``deploytest``, promoted."""
    tags = package_cascade_models(demo, CASCADE, n_sample=80)
    manifest = compose_manifest(
        CASCADE,
        router_tag=tags["router"],
        routes=ROUTES,
        threshold=0.5,
        positive_class="1",
        branches={"reseller": tags["reseller"], "retail": tags["retail"]},
    )
    tag = save_manifest(manifest)
    promote(tag)
    return tag


def candidate(champion_tag: str, threshold: float) -> str:
    """A manifest over the champion's own models, differing in its threshold (saved, not promoted)."""
    current = load_manifest(champion_tag)
    assert current.router is not None
    manifest = compose_manifest(
        CASCADE,
        router_tag=current.router.tag,
        routes=current.router.routes,
        threshold=threshold,
        positive_class=current.router.positive_class,
        branches=current.branches,
    )
    return save_manifest(manifest)


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


@dataclass
class Answer:
    """One request as a client saw it; ``status`` None means no HTTP answer at all."""

    client: int
    status: int | None
    body: Any = None
    error: str = ""
    finished: float = field(default_factory=time.monotonic)


@dataclass
class Load:
    """``clients`` keep-alive clients sending single-row predicts to ``url`` back to back.

    ``async with Load(...) as load:`` runs them; leaving the block stops them and waits.
    """

    url: str
    rows: list[dict[str, Any]]
    clients: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Load:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def ok(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 200]

    def has_served(self, cascade_tag: str) -> bool:
        return any(row(a)["versions"]["cascade"] == cascade_tag for a in self.ok())

    async def _client(self, i: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0) as client:
            n = i
            while not self._stop.is_set():
                n += 1
                try:
                    response = await client.post(PREDICT, json=self.rows[n % len(self.rows)])
                except httpx.TransportError as exc:  # refused or dropped: no answer
                    self.answers.append(Answer(i, None, error=type(exc).__name__))
                    await asyncio.sleep(0.02)
                    continue
                json = response.headers.get("content-type") == "application/json"
                self.answers.append(Answer(i, response.status_code, response.json() if json else None))


def row(answer: Answer) -> dict[str, Any]:
    [only] = answer.body["predictions"]
    return dict(only)
