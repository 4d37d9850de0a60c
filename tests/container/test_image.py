"""The gateway image, built and run with podman, answers what the same models answer on the host.

The image is built from the project's Dockerfile on the local ``python:3.11-slim``
(``.ci/base-image``), with podman's layer cache: a rerun with unchanged dependencies
rebuilds only the source layers. The state it serves — the session's packaged ``gwtest``
cascade and a Feast SQLite store applied and materialized for the demo data — is prepared
on the host; the container gets only what serving reads, read-only (the model store and the
Feast state), and a volume of its own for the prediction log, as docs/deployment.md tells an
operator to run it. The container runs on the host network (``--network=host``), as this
machine requires. The training image (``--target trainer``) is built too: it has what the
serving image leaves out.

Build time and start-to-ready time are printed (``-s`` shows them), never asserted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from returns_data import DemoData

from tests.container import podman
from tests.deploy.conftest import CASCADE, champion_tag  # noqa: F401 - a promoted champion
from tests.gateway.conftest import demo, request_row  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.container,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        podman.podman() is None, reason="podman is not installed (.ci/run installs it): no image to build"
    ),
]

IMAGE = "localhost/skewguard:serve"
TRAINER = "localhost/skewguard:trainer"
TRAINING = ("sklearn", "skl2onnx", "evidently", "prefect")
PREDICT = f"/v1/cascades/{CASCADE}/predict"
READY_TIMEOUT = 180.0
CONTAINER_USER = "10001"


@dataclass(frozen=True)
class Container:
    name: str
    url: str
    ready_seconds: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The gateway image, built (or rebuilt from podman's cache) from the working tree."""
    started = time.monotonic()
    podman.ensure_base_image()
    base_seconds = time.monotonic() - started
    seconds = podman.build_image(IMAGE, tmp_path_factory.mktemp("image-build"))
    size = podman.run("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip()
    print(f"\nbase image {base_seconds:.1f} s; image build {seconds:.1f} s; size {int(size) / 1e9:.2f} GB")
    return IMAGE


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory, demo: DemoData, champion_tag: str) -> Path:  # noqa: F811
    """A skewguard home holding the session's model store (its champion reads no online features)."""
    home = tmp_path_factory.mktemp("container-home")
    shutil.copytree(
        os.environ["BENTOML_HOME"], home / "bentoml", ignore=shutil.ignore_patterns("bentos", "tmp")
    )
    for folder in ("bentos", "envs", "tmp"):  # as BentoML leaves a home it used (empty: not copied)
        (home / "bentoml" / folder).mkdir(exist_ok=True)
    (home / "feast").mkdir()
    (home / "data").mkdir()  # training data an operator's home holds, which no image may take in
    demo.orders.head(20).to_parquet(home / "data" / "orders.parquet")
    return home


@pytest.fixture(scope="module")
def host_answer(state: Path, demo: DemoData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """What the co-located gateway answers in this process over the same state (before it is mounted)."""
    import asyncio

    return asyncio.run(_in_process_answer(state, tmp_path_factory.mktemp("host-log"), _rows(demo)))


def _rows(demo: DemoData) -> list[dict[str, Any]]:  # noqa: F811
    return [request_row(demo, i) for i in (-1, -2, -3, -50, -400, -900)]


async def _in_process_answer(home: Path, folder: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from asgi_lifespan import LifespanManager

    from skewguard.gateway.app import create_app
    from skewguard.gateway.server import build_gateway
    from skewguard.gateway.settings import GatewaySettings

    settings = GatewaySettings.from_env(
        {
            "SKEWGUARD_HOME": str(home),
            "SKEWGUARD_CASCADES": CASCADE,
            "SKEWGUARD_WATCH_SECONDS": "0",
            "SKEWGUARD_LOG_URL": f"sqlite:///{folder / 'host.db'}",
        }
    )
    async with LifespanManager(create_app(build_gateway(settings)), startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.post(PREDICT, json={"rows": rows})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def container(image: str, state: Path, host_answer: dict[str, Any]) -> Iterator[Container]:
    """The image serving ``state``'s model store and Feast state, mounted read-only."""
    log = f"skewguard-log-{uuid.uuid4().hex[:8]}"
    mounts = (
        "--volume", f"{state / 'bentoml'}:/var/lib/skewguard/bentoml:ro",
        "--volume", f"{state / 'feast'}:/var/lib/skewguard/feast:ro",
        "--volume", f"{log}:/var/lib/skewguard/log",
    )  # fmt: skip
    try:
        with _running(image, *mounts) as running:
            print(f"\ncontainer start to ready: {running.ready_seconds:.1f} s")
            yield running
    finally:
        podman.run("volume", "rm", "--force", log, check=False)


@contextlib.contextmanager
def _running(image: str, *options: str) -> Iterator[Container]:
    """``image`` running on a free host port; removed afterwards (its log shown if it never got ready)."""
    name, port = f"skewguard-test-{uuid.uuid4().hex[:8]}", _free_port()
    started = time.monotonic()
    podman.run(
        "run", "--detach", "--name", name, "--network", "host", *podman.ULIMITS,
        "--env", f"SKEWGUARD_PORT={port}", "--env", f"SKEWGUARD_CASCADES={CASCADE}",
        "--env", "SKEWGUARD_WATCH_SECONDS=0", *options, image,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        yield Container(name, url, _wait_ready(name, url, started))
    finally:
        podman.run("rm", "--force", "--time", "10", name, check=False)


def _wait_ready(name: str, url: str, started: float) -> float:
    """Poll ``/readyz`` until 200; fail with the container's log if it exits or never gets there."""
    while time.monotonic() - started < READY_TIMEOUT:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return time.monotonic() - started
        running = podman.run("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
        if running != "true":
            pytest.fail(f"container {name} exited:\n{_logs(name)}")
        time.sleep(0.25)
    pytest.fail(f"container {name} was not ready after {READY_TIMEOUT} s:\n{_logs(name)}")


def _logs(name: str) -> str:
    done = podman.run("logs", name, check=False)
    return (done.stdout + done.stderr)[-4000:]


def test_the_container_answers_what_the_same_models_answer_on_the_host(
    container: Container,
    host_answer: dict[str, Any],
    demo: DemoData,  # noqa: F811
) -> None:
    _assert_same_answers(container, host_answer, demo)


def _assert_same_answers(container: Container, host_answer: dict[str, Any], demo: DemoData) -> None:  # noqa: F811
    response = httpx.post(f"{container.url}{PREDICT}", json={"rows": _rows(demo)}, timeout=30)
    assert response.status_code == 200, response.text
    got, want = response.json()["predictions"], host_answer["predictions"]
    assert len(got) == len(want) == 6
    for mine, theirs in zip(got, want, strict=True):
        assert (mine["route"], mine["prediction"], mine["versions"]) == (
            theirs["route"],
            theirs["prediction"],
            theirs["versions"],
        )
        assert mine["router_probability"] == pytest.approx(theirs["router_probability"], abs=1e-6)
        assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)
        assert mine["features"] == pytest.approx(theirs["features"], abs=1e-9)
        assert mine["defaults_used"] == theirs["defaults_used"]


def test_bad_input_to_the_container_is_a_4xx_naming_the_field(container: Container, demo: DemoData) -> None:  # noqa: F811
    row = {**request_row(demo), "price": "x"}
    response = httpx.post(f"{container.url}{PREDICT}", json=row, timeout=30)
    assert response.status_code == 422
    assert response.json()["field"] == "price"


def test_the_gateway_runs_as_a_non_root_user_and_its_healthcheck_passes(container: Container) -> None:
    uid = podman.run("exec", container.name, "id", "-u").stdout.strip()
    assert uid == CONTAINER_USER
    owner = podman.run("exec", container.name, "stat", "-c", "%u", "/app/gateway/app.py").stdout.strip()
    assert owner == "0"  # the code is not writable by the service
    configured = podman.run("inspect", "--format", "{{.Config.Healthcheck.Test}}", container.name).stdout
    assert "/healthz" in configured  # kept: the image was built in docker format
    assert podman.run("healthcheck", "run", container.name, check=False).returncode == 0


def test_the_baked_image_serves_its_own_state_and_only_that(
    image: str,
    state: Path,
    host_answer: dict[str, Any],
    demo: DemoData,  # noqa: F811
    tmp_path: Path,
) -> None:
    baked = f"{image}-baked"
    podman.build_image(baked, tmp_path, target="baked", context=podman.baked_context(tmp_path, state))
    try:
        with _running(baked) as running:
            _assert_same_answers(running, host_answer, demo)
            listing = podman.run("exec", running.name, "find", "/var/lib/skewguard", "-name", "*.parquet")
        assert listing.stdout.strip() == ""  # .dockerignore kept the demo data out
    finally:
        podman.run("rmi", baked, check=False)


def test_the_state_is_served_read_only_and_keeps_its_owner(container: Container, state: Path) -> None:
    denied = podman.run("exec", container.name, "touch", "/var/lib/skewguard/bentoml/x", check=False)
    assert denied.returncode != 0
    logged = podman.run("exec", container.name, "ls", "/var/lib/skewguard/log").stdout.split()
    assert "predictions.db" in logged  # the log's own volume is the one place written
    assert {p.stat().st_uid for p in (state / "bentoml").rglob("*")} == {os.getuid()}  # nothing re-owned


def test_the_serving_image_has_no_training_stack_and_the_trainer_has_it(image: str, tmp_path: Path) -> None:
    seconds = podman.build_image(TRAINER, tmp_path, target="trainer")
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", TRAINER).stdout.strip())
    print(f"\ntrainer image build {seconds:.1f} s; size {size / 1e9:.2f} GB")
    probe = f"import importlib.util as u; print(*[m for m in {TRAINING!r} if u.find_spec(m)])"
    found = {
        tag: podman.run(
            "run", "--rm", "--network", "host", *podman.ULIMITS, tag, "python", "-c", probe
        ).stdout.split()
        for tag in (image, TRAINER)
    }
    assert found == {image: [], TRAINER: list(TRAINING)}
    serving = int(podman.run("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    assert serving < size
