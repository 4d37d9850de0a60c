"""A smoke run of the rendered manifests: ``podman kube play`` of the gateway Deployment and its ConfigMap.

Podman runs a Deployment's pod as Kubernetes would, with its security context (user
10001, read-only root filesystem, no capabilities), its emptyDir volumes and the state
volume claim, so the manifests' own settings are what start the gateway: it imports the
champion's models from the export on the (read-only) state volume into its emptyDir
model store, reads the alias from Redis and logs to PostgreSQL.

What a cluster would provide is put in by the test, and nothing else is changed: the
state volume is a podman volume holding a model export, as the train Job leaves it; the
Secret's values (podman 4.3 reads no Secret objects) become plain values; the image is the
one ``.ci/run`` builds, used as present (``imagePullPolicy`` cannot pull a local image);
and the pod uses the host's network on a free port, as containers must on this machine
(so no port mapping). Podman runs no probes, so the test polls ``/readyz`` itself.
"""

from __future__ import annotations

import contextlib
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from skewguard.bentos.aliases import configured
from skewguard.bentos.manifest import promote
from tests.container import podman
from tests.deploy.conftest import CASCADE, find, objects, render
from tests.gateway.conftest import request_row

pytestmark = [
    pytest.mark.container,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(podman.podman() is None, reason="podman is not installed (.ci/run installs it)"),
]

IMAGE = "localhost/skewguard:serve"
READY_TIMEOUT = 180.0
ALIAS_URL = "redis://127.0.0.1:6379/0"
LOG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The serving image (``--target gateway``), built or taken from podman's layer cache."""
    podman.ensure_base_image()
    seconds = podman.build_image(IMAGE, tmp_path_factory.mktemp("serve-build"), target="gateway")
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    print(f"\nserving image built in {seconds:.1f} s; size {size / 1e9:.2f} GB")
    return IMAGE


@pytest.fixture(scope="module")
def state_volume(tmp_path_factory: pytest.TempPathFactory, champion_tag: str) -> Iterator[str]:
    """A podman volume holding what the train Job leaves on the state volume, and the alias in Redis."""
    home = tmp_path_factory.mktemp("state")
    namespace = f"t{uuid.uuid4().hex[:10]}"
    with configured(f"{ALIAS_URL}?namespace={namespace}", str(home / "exports")):
        promote(champion_tag)
    archive = home.parent / "state.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(home / "exports", arcname="exports")
    volume = f"skewguard-state-{uuid.uuid4().hex[:8]}"
    podman.run("volume", "create", volume)
    try:
        podman.run("volume", "import", volume, str(archive))
        yield f"{volume}?namespace={namespace}"
    finally:
        podman.run("volume", "rm", "--force", volume, check=False)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pod_yaml(volume: str, namespace: str, port: int, suffix: str) -> str:
    """The rendered ConfigMap and gateway Deployment, with what a cluster would provide put in."""
    docs = objects(render("co-located"))
    settings = find(docs, "ConfigMap", "skewguard-settings")
    deployment = find(docs, "Deployment", "skewguard-gateway")
    settings["metadata"]["name"] += f"-{suffix}"
    settings["data"] |= {
        "SKEWGUARD_PORT": str(port),
        "SKEWGUARD_CASCADES": CASCADE,  # the session's trained cascade
    }
    deployment["metadata"]["name"] += f"-{suffix}"
    spec = deployment["spec"]["template"]["spec"]
    spec["hostNetwork"] = True
    [container] = spec["containers"]
    container["imagePullPolicy"] = "Never"
    container["ports"] = []  # podman maps no ports on the host's network (the probes name none)
    container["envFrom"][0]["configMapRef"]["name"] = settings["metadata"]["name"]
    secrets = {
        "api-token": "smoke-test-token",
        "redis-url": "127.0.0.1:6379",
        "alias-url": f"{ALIAS_URL}?namespace={namespace}",
        "log-url": LOG_URL,
    }
    for variable in container["env"]:
        if "valueFrom" in variable:
            variable["value"] = secrets[variable.pop("valueFrom")["secretKeyRef"]["key"]]
    [state] = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    state["persistentVolumeClaim"]["claimName"] = volume
    return yaml.safe_dump_all([settings, deployment])


@contextlib.contextmanager
def _played(path: Path, deployment: str) -> Iterator[tuple[str, str]]:
    """``podman kube play`` the file: (its pod, the gateway's container); ``kube down`` afterwards."""
    podman.run("kube", "play", str(path), timeout=300)
    try:
        pod = podman.run(
            "pod", "ps", "--filter", f"name={deployment}", "--format", "{{.Name}}"
        ).stdout.strip()
        names = podman.run("ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}}").stdout.split()
        [container] = [name for name in names if not name.endswith("-infra")]
        yield pod, container
    finally:
        podman.run("kube", "down", str(path), check=False)


def _logs(container: str) -> str:
    done = podman.run("logs", container, check=False)
    return (done.stdout + done.stderr)[-4000:]


def _wait_ready(url: str, container: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT:
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(f"{url}/readyz", timeout=2.0)
            if response.status_code == 200:
                return time.monotonic() - started, response.json()
        time.sleep(0.25)
    pytest.fail(f"{container} was not ready after {READY_TIMEOUT} s:\n{_logs(container)}")


def test_the_rendered_gateway_pod_becomes_ready_and_answers_a_prediction(
    image: str, state_volume: str, tmp_path: Path, demo: Any, champion_tag: str
) -> None:
    volume, _, namespace = state_volume.partition("?namespace=")
    port, suffix = _free_port(), uuid.uuid4().hex[:6]
    manifest = tmp_path / "gateway.yaml"
    manifest.write_text(_pod_yaml(volume, namespace, port, suffix))
    url = f"http://127.0.0.1:{port}"
    with _played(manifest, f"skewguard-gateway-{suffix}") as (_, container):
        seconds, ready = _wait_ready(url, container)
        headers = {"authorization": "Bearer smoke-test-token"}
        response = httpx.post(
            f"{url}/v1/cascades/{CASCADE}/predict", json=request_row(demo), headers=headers, timeout=30
        )
        written = podman.run("exec", container, "touch", "/app/x", check=False)
        uid = podman.run("exec", container, "id", "-u").stdout.strip()
    print(f"\nkube play to /readyz 200: {seconds:.1f} s")
    assert ready == {"ready": True, "problems": []}
    assert response.status_code == 200, response.text
    [row] = response.json()["predictions"]
    assert row["versions"]["cascade"] == champion_tag  # imported from the export on the volume
    assert written.returncode != 0  # read-only root filesystem
    assert uid == "10001"
