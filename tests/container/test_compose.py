"""compose.yaml: podman-compose parses it, and the stack it describes can come up and be wired right.

``podman-compose config`` resolves the file (anchors, merges, ``${VAR:-default}``) the way
``podman-compose up`` would; the checks below read that resolved form, so they see what
the tool sees. It does not check references between services, so these tests do: every
service has a health check, every dependency exists and waits for health (or for the
one-shot setup to finish), every ``SKEWGUARD_*`` variable is a real setting, and the
gateway's remote model URLs point at the model services' ports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from skewguard.gateway.settings import GatewaySettings
from skewguard.settings import PREFIX

PROJECT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT / "compose.yaml"
PODMAN_COMPOSE = Path(sys.executable).with_name("podman-compose")
STACK = {"gateway", "redis", "postgres", "prefect", "setup", "router", "reseller", "retail"}
MODEL_SERVICES = {"router", "reseller", "retail"}
ONE_SHOT = "setup"


def _parsed(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PODMAN_COMPOSE), "-f", str(path), "config"],
        capture_output=True,
        text=True,
        cwd=path.parent,
        check=False,
        timeout=60,
    )


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """The compose file as podman-compose resolves it (plain YAML without podman)."""
    if not (PODMAN_COMPOSE.exists() and shutil.which("podman")):
        resolved: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
        return resolved
    done = _parsed(COMPOSE)
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = yaml.safe_load(done.stdout)
    return parsed


@pytest.mark.skipif(
    not (PODMAN_COMPOSE.exists() and shutil.which("podman")),
    reason="podman-compose (dev extras) and podman are needed to parse compose.yaml",
)
def test_podman_compose_refuses_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  gateway:\n    image: x\n    networks: [nowhere]\n")
    assert _parsed(broken).returncode != 0
    assert _parsed(COMPOSE).returncode == 0


def test_the_stack_has_every_service_and_each_has_a_health_check(stack: dict[str, Any]) -> None:
    services = stack["services"]
    assert set(services) == STACK
    for name, service in services.items():
        if name == ONE_SHOT:
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no health check"
        assert test[0] in {"CMD", "CMD-SHELL"}, name


def test_every_dependency_exists_and_waits_for_health(stack: dict[str, Any]) -> None:
    services = stack["services"]
    for name, service in services.items():
        for other, how in service.get("depends_on", {}).items():
            assert other in services, f"{name} depends on undefined service {other}"
            wanted = "service_completed_successfully" if other == ONE_SHOT else "service_healthy"
            assert how["condition"] == wanted, f"{name} → {other}"
    assert set(services["gateway"]["depends_on"]) == {"redis", "postgres", *MODEL_SERVICES}


def test_our_services_run_the_project_image_and_share_its_state(stack: dict[str, Any]) -> None:
    ours = {
        name: s for name, s in stack["services"].items() if name in {"gateway", ONE_SHOT, *MODEL_SERVICES}
    }
    for name, service in ours.items():
        assert service["build"]["context"] in {".", str(PROJECT)}, name
        assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert any(str(v).endswith(":/var/lib/skewguard") for v in service["volumes"]), name
    for name in MODEL_SERVICES:
        command = stack["services"][name]["command"]
        assert command[:3] == ["bentoml", "serve", "skewguard.bentos.service:OnnxModelService"]
        assert stack["services"][name]["environment"]["SKEWGUARD_MODEL"] == f"returns-{name}:latest"


def test_skewguard_variables_are_real_settings(stack: dict[str, Any]) -> None:
    known = {PREFIX + field.upper() for field in GatewaySettings.model_fields} | {"SKEWGUARD_MODEL"}
    for name, service in stack["services"].items():
        environment = service.get("environment", {})
        unknown = {key for key in environment if key.startswith(PREFIX)} - known
        assert not unknown, f"{name}: {sorted(unknown)} are not skewguard settings"
    GatewaySettings.from_env(stack["services"]["gateway"]["environment"])  # valid values too


def test_the_gateway_calls_each_model_service_on_its_port(stack: dict[str, Any]) -> None:
    services = stack["services"]
    remote = json.loads(services["gateway"]["environment"]["SKEWGUARD_REMOTE_MODELS"])
    assert set(remote) == {f"returns-{name}" for name in MODEL_SERVICES}
    for model, url in remote.items():
        parts = urlparse(url)
        service = services[str(parts.hostname)]
        assert service["environment"]["SKEWGUARD_MODEL"] == f"{model}:latest"
        command = service["command"]
        assert command[command.index("--port") + 1] == str(parts.port)


def test_setup_trains_in_the_trainer_image_and_the_rest_serve_from_the_serving_image(
    stack: dict[str, Any],
) -> None:
    services = stack["services"]
    assert services[ONE_SHOT]["build"]["target"] == "trainer"
    assert services[ONE_SHOT]["image"] == "localhost/skewguard:trainer"
    for name in {"gateway", *MODEL_SERVICES}:
        assert services[name]["build"]["target"] == "gateway", name
        assert services[name]["image"] == "localhost/skewguard:serve", name
