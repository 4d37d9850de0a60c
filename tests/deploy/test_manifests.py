"""The Kubernetes manifests: both overlays render, validate against the schemas, and pass the policy scan.

No cluster is needed: ``kubectl kustomize`` renders offline, ``kubernetes-validate`` checks
every object against the bundled schemas of one pinned Kubernetes version (strict: an
unknown field is an error), and checkov scans the rendered objects. Its remaining findings
must be exactly the ones docs/deployment.md accepts, each with its reason. A broken object
and a privileged pod are fed to the validator and the scanner too, so neither can pass by
checking nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import ValidationError

from skewguard.gateway.settings import GatewaySettings
from skewguard.settings import PREFIX
from tests.deploy.conftest import OVERLAYS, PROJECT, find, objects, pod_spec, render

KUBERNETES_VERSION = "1.32.0"
CHECKOV = Path(sys.executable).parent.parent / "tools" / "checkov" / "bin" / "checkov"
DEPLOYMENT_DOC = PROJECT / "docs" / "deployment.md"
SECRET = "skewguard-secrets"
MODELS = {"router", "reseller", "retail"}


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_rendered_object_validates_strictly(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, docs = rendered
    for doc in docs:
        try:
            _validate(doc)
        except ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert all(d["metadata"].get("namespace") == "skewguard" for d in docs if d["kind"] != "Namespace")


def test_the_validator_refuses_a_misspelt_field_and_a_wrong_type() -> None:
    deployment = find(objects(render("co-located")), "Deployment", "skewguard-gateway")
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong):
        with pytest.raises(ValidationError):
            _validate(broken)


def test_both_overlays_have_every_part_of_the_deployment(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Namespace", "skewguard"),
        ("ConfigMap", "skewguard-settings"),
        ("PersistentVolumeClaim", "skewguard-state"),
        ("Deployment", "skewguard-gateway"),
        ("Service", "skewguard-gateway"),
        ("HorizontalPodAutoscaler", "skewguard-gateway"),
        ("PodDisruptionBudget", "skewguard-gateway"),
        ("Job", "skewguard-train"),
        ("CronJob", "skewguard-retrain"),
    } <= kinds
    assert not [d for d in docs if d["kind"] == "Secret"], "no secret values are committed"
    hpa = find(docs, "HorizontalPodAutoscaler", "skewguard-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB lets one go at a time


def test_the_gateway_probes_its_endpoints_drains_and_runs_locked_down(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    [container] = pod_spec(find(docs, "Deployment", "skewguard-gateway"))["containers"]
    assert container["command"] == ["skewguard", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/lib/skewguard"]["readOnly"] is True  # the state volume, with the export


def test_every_container_is_non_root_read_only_and_bounded(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job", "CronJob"}:
            continue
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{doc['metadata']['name']}/{container['name']}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where


def test_jobs_train_from_the_cascade_file_and_retrain_on_schedule(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    [train] = pod_spec(find(docs, "Job", "skewguard-train"))["containers"]
    command = train["command"]
    assert command[:3] == ["skewguard", "train", "-f"]
    assert command[3] == "examples/returns/cascade.yaml"
    [retrain] = pod_spec(find(docs, "CronJob", "skewguard-retrain"))["containers"]
    assert retrain["command"][:2] == ["skewguard", "retrain"]


def test_settings_are_real_and_secrets_are_references(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    settings = find(docs, "ConfigMap", "skewguard-settings")["data"]
    known = {PREFIX + field.upper() for field in GatewaySettings.model_fields} | {"SKEWGUARD_MODEL"}
    assert set(settings) <= known
    GatewaySettings.from_env(settings)  # valid values too
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job", "CronJob"}:
            continue
        spec = pod_spec(doc)
        for container in spec.get("initContainers", []) + spec["containers"]:
            for variable in container.get("env", []):
                assert variable["name"] in known or not variable["name"].startswith(PREFIX)
                if "valueFrom" in variable:
                    assert variable["valueFrom"]["secretKeyRef"]["name"] == SECRET


def test_the_remote_overlay_serves_each_model_apart_and_the_gateway_calls_them() -> None:
    docs = objects(render("remote"))
    remote = json.loads(find(docs, "ConfigMap", "skewguard-settings")["data"]["SKEWGUARD_REMOTE_MODELS"])
    assert set(remote) == {f"returns-{role}" for role in MODELS}
    for role in MODELS:
        service = find(docs, "Service", f"skewguard-model-{role}")
        assert remote[f"returns-{role}"] == f"http://{service['metadata']['name']}"
        assert service["spec"]["ports"][0]["port"] == 80
        spec = pod_spec(find(docs, "Deployment", f"skewguard-model-{role}"))
        assert spec["containers"][0]["command"][:2] == ["bentoml", "serve"]
        assert spec["initContainers"][0]["command"][:2] == ["skewguard", "import-champion"]
    co_located = objects(render("co-located"))
    assert "SKEWGUARD_REMOTE_MODELS" not in find(co_located, "ConfigMap", "skewguard-settings")["data"]


def _accepted_findings() -> dict[str, str]:
    """Check id → reason, from the table under 'Accepted policy findings' in docs/deployment.md."""
    text = DEPLOYMENT_DOC.read_text()
    section = text.split("### Accepted policy findings", 1)[1].split("\n#", 1)[0]
    return dict(re.findall(r"^\| `(CKV2?_K8S_\d+)` \| (.+?) \|$", section, flags=re.MULTILINE))


def _checkov(folder: Path) -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: `make install` installs checkov in a venv of its own.")
    done = subprocess.run(
        [str(CHECKOV), "-d", str(folder), "--framework", "kubernetes", "--output", "json", "--quiet",
         "--skip-download", "--compact"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("rendered")
    for overlay in OVERLAYS:
        (folder / f"{overlay}.yaml").write_text(render(overlay))
    return _checkov(folder)


def test_checkov_finds_nothing_but_the_documented_exceptions(scan: dict[str, Any]) -> None:
    accepted = _accepted_findings()
    assert accepted, "docs/deployment.md lists no accepted findings"
    assert all(len(reason) > 40 for reason in accepted.values())
    failed = {(c["check_id"], c["resource"]) for c in scan["results"]["failed_checks"]}
    unexplained = sorted(f for f in failed if f[0] not in accepted)
    assert unexplained == [], unexplained
    assert scan["summary"]["passed"] > 500
    # Each accepted finding still occurs: an exception nothing needs is dropped from the docs.
    assert {check for check, _ in failed} == set(accepted)


def test_checkov_flags_a_privileged_root_pod(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: skewguard}\nspec:\n"
        "  containers:\n  - name: c\n    image: busybox:1\n"
        "    securityContext: {privileged: true, runAsUser: 0}\n"
    )
    failed = {c["check_id"] for c in _checkov(tmp_path)["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= failed  # privileged; privilege escalation allowed
