"""Shadow and canary in real gateway processes: several workers, and a router served by its own Bento.

A variant attached by ``skewguard cascade shadow`` (the alias, watched) or by the admin
endpoint (one worker, which tells the others) reaches every worker: each request on a fresh
connection — any worker's — is shadowed, and an entity sees one variant whichever worker
answers. With the router remote (``bentoml serve``), a candidate over the same router runs
it through the same service, as a shadow and as a canary.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from returns_data import DemoData

from skewguard.bentos.bento import build_bento
from skewguard.bentos.manifest import load_manifest
from skewguard.bentos.variants import detach_variant
from skewguard.predictionlog.records import read_records
from tests.gateway.conftest import VARIANT_CASCADE, request_row
from tests.gateway.test_server import SKEWGUARD, Server, _free_port, bento, gateway, home, running

__all__ = ["home"]  # the module fixture: a skewguard home with the Feast project materialized

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREDICT = f"/v1/cascades/{VARIANT_CASCADE}/predict"
VARIANT = f"/v1/admin/cascades/{VARIANT_CASCADE}/variant"
TOKEN = "variant-server-token-51aa"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def detached(variant_champion: str) -> Any:
    detach_variant(VARIANT_CASCADE)
    yield
    detach_variant(VARIANT_CASCADE)


def _fresh(server: Server) -> httpx.Client:
    """A client opening a new connection per request: any worker may take each one."""
    return httpx.Client(
        base_url=server.url, headers=AUTH, timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)
    )


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s: {what}")
        time.sleep(0.1)


def _every_worker_shows(
    server: Server, version: str | None, mode: str | None = None, times: int = 24
) -> bool:
    """``times`` listings in a row, each on a new connection, show the variant ``version`` (None: none),
    attached as ``mode`` when given (a shadow turned canary keeps its version)."""
    with _fresh(server) as client:
        for _ in range(times):
            variant = client.get("/v1/cascades").json()["cascades"][0]["variant"]
            if (variant["version"] if variant and variant["serving"] else None) != version:
                return False
            if mode is not None and variant["mode"] != mode:
                return False
    return True


def _post_all(server: Server, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with _fresh(server) as client:
        answers = [client.post(PREDICT, json=body) for body in bodies]
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers if a.status_code != 200][:3]
    return [a.json() for a in answers]


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([str(SKEWGUARD), *args], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _log(folder: Path) -> list[dict[str, Any]]:
    return read_records(f"sqlite:///{folder / 'predictions.db'}")


def test_a_shadow_and_a_canary_reach_every_worker(
    home: Path, tmp_path: Path, demo: DemoData, detached: None, variant_champion: str, twin_candidate: str
) -> None:
    env = {"SKEWGUARD_CASCADES": VARIANT_CASCADE, "SKEWGUARD_API_TOKEN": TOKEN, "SKEWGUARD_WORKERS": "2"}
    env |= {"SKEWGUARD_SHADOW_MAX_LOAD": "1", "SKEWGUARD_SHADOW_MAX_INFLIGHT": "0"}  # each copy runs: checked
    server = gateway(home, tmp_path, **env)
    rows = [request_row(demo, -1 - i) for i in range(40)]
    with running(server):
        _cli(
            "cascade",
            "shadow",
            VARIANT_CASCADE,
            twin_candidate,
            env=os.environ | {"SKEWGUARD_HOME": str(home)},
        )
        _until(lambda: _every_worker_shows(server, twin_candidate), 30, "every worker serves the shadow")
        shadowed = _post_all(server, [rows[i % 40] for i in range(120)])
        assert {a["predictions"][0]["variant"] for a in shadowed} == {"champion"}

        with _fresh(server) as client:
            attached = client.put(VARIANT, json={"mode": "canary", "version": twin_candidate, "share": 0.5})
        assert attached.status_code == 200, attached.text
        _until(
            lambda: _every_worker_shows(server, twin_candidate, "canary"),
            30,
            "every worker serves the canary",
        )
        entities = list(range(4_000_000, 4_000_100))
        bodies = [rows[e % 40] | {"customer_id": e} for _ in range(3) for e in entities]
        answers = _post_all(server, bodies)
        seen: dict[int, set[str]] = {}
        for body, answer in zip(bodies, answers, strict=True):
            seen.setdefault(body["customer_id"], set()).add(answer["predictions"][0]["variant"])
        assert all(len(variants) == 1 for variants in seen.values()), seen
        assert Counter(next(iter(v)) for v in seen.values()).keys() == {"champion", "canary"}

        with _fresh(server) as client:
            assert client.delete(VARIANT).status_code == 200
        _until(lambda: _every_worker_shows(server, None), 30, "every worker serves the champion alone")
    records = {r["request_id"]: r for r in _log(tmp_path)}  # written by both workers, drained on SIGTERM
    shadow_ids = [a["request_id"] for a in shadowed]
    assert all(records[i]["candidate"]["version"] == twin_candidate for i in shadow_ids)
    assert all("prediction" in records[i]["candidate"] for i in shadow_ids)  # each ran, none shed
    canary_rows = [records[a["request_id"]] for a in answers if a["predictions"][0]["variant"] == "canary"]
    assert canary_rows
    assert all(r["versions"]["cascade"] == twin_candidate for r in canary_rows)


def test_a_shadow_and_a_canary_run_a_remote_router_through_its_service(
    home: Path, tmp_path: Path, demo: DemoData, detached: None, variant_champion: str, twin_candidate: str
) -> None:
    router = load_manifest(variant_champion).router.tag  # type: ignore[union-attr]
    service = bento(build_bento(router), _free_port(), tmp_path, "bento")
    remote = json.dumps({router.partition(":")[0]: service.url})
    env = {
        "SKEWGUARD_CASCADES": VARIANT_CASCADE,
        "SKEWGUARD_API_TOKEN": TOKEN,
        "SKEWGUARD_REMOTE_MODELS": remote,
    }
    server = gateway(home, tmp_path, **env)
    rows = [request_row(demo, -1 - i) for i in range(120)]
    with running(service, server):
        with _fresh(server) as client:
            shadow = client.put(VARIANT, json={"mode": "shadow", "version": twin_candidate})
        assert shadow.status_code == 200, shadow.text
        assert shadow.json()["variant"]["serving"] is True
        shadowed = _post_all(server, rows)
        with _fresh(server) as client:
            canary = client.put(VARIANT, json={"mode": "canary", "version": twin_candidate, "share": 0.5})
        assert canary.status_code == 200, canary.text
        answered = _post_all(server, [rows[i] | {"customer_id": 5_000_000 + i} for i in range(60)])
    records = {r["request_id"]: r for r in _log(tmp_path)}
    for answer in shadowed:
        [row] = answer["predictions"]
        shadow = records[answer["request_id"]]["candidate"]
        assert "prediction" in shadow, shadow
        # the remote router's probability, the candidate's own threshold (0.35): its route
        assert shadow["route"] == ("reseller" if row["router_probability"] >= 0.35 else "retail")
        if shadow["route"] == row["route"]:  # the same specialist on the same row: the same answer
            assert shadow["probabilities"] == pytest.approx(row["probabilities"])
    variants = Counter(a["predictions"][0]["variant"] for a in answered)
    assert variants.keys() == {"champion", "canary"}, variants
