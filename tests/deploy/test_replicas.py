"""Promotion across replicas: gateway processes that share only the alias store and the model export.

Each replica is a real ``skewguard serve`` process with a home and a model store of its own
(empty at start: it imports the champion from the export), as pods on different nodes
would have; they share nothing but the champion alias (Redis or PostgreSQL, the machine's
own servers, in a namespace of the test's) and the export folder. A promotion made in the
test process — as ``skewguard retrain`` or the train Job would — must reach every replica
under load without one failed request, each answer routed wholly by one version. When the
alias store goes away, or an archive does not match the digest its promotion recorded,
the replicas keep serving the champion they have and say so on ``/readyz`` and ``/metrics``.

The delay from the promotion to each replica's first answer from the new version is
printed (``-s``), never asserted: docs/deployment.md reports it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from skewguard.bentos.aliases import Alias, configured
from skewguard.bentos.exports import export_models
from skewguard.bentos.manifest import load_manifest, promote
from tests.deploy.conftest import CASCADE, Load, candidate
from tests.deploy.conftest import row as _row
from tests.gateway.conftest import request_row
from tests.gateway.test_server import SKEWGUARD, Server, _free_port, _launch, _stop, _wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

WATCH_SECONDS = "2"
"""The deployment's poll interval (deploy/kubernetes/base/settings.yaml)."""
FOLLOW_TIMEOUT = 60.0
"""A replica that has not followed a promotion by then never will (a liveness guard, not a bound)."""
STORES = {
    "redis": "redis://127.0.0.1:6379/0",
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
}


def _replica(i: int, folder: Path, shared: dict[str, str]) -> Server:
    """``skewguard serve`` with a home and an empty model store of its own."""
    home = folder / f"replica-{i}"
    home.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "SKEWGUARD_HOME": str(home),
        "BENTOML_HOME": str(home / "bentoml"),
        "SKEWGUARD_CASCADES": CASCADE,
        "SKEWGUARD_PORT": str(port),
        "SKEWGUARD_WATCH_SECONDS": WATCH_SECONDS,
        "SKEWGUARD_LOG_URL": f"sqlite:///{home / 'predictions.db'}",
        **shared,
    }
    return _launch([str(SKEWGUARD), "serve"], env, home / "serve.log", f"http://127.0.0.1:{port}", folder)


@contextmanager
def _replicas(n: int, folder: Path, shared: dict[str, str]) -> Iterator[list[Server]]:
    servers = [_replica(i, folder, shared) for i in range(n)]
    try:
        for server in servers:
            _wait_ready(server, timeout=120)
        yield servers
    finally:
        for server in servers:
            _stop(server)


def _served(server: Server) -> str:
    [cascade] = httpx.get(f"{server.url}/v1/cascades", timeout=10).json()["cascades"]
    return str(cascade["version"])


async def _first_answer_from(loads: list[Load], tag: str, since: float) -> list[float]:
    """Per replica: seconds from ``since`` to its first answer computed by version ``tag``."""
    started = time.monotonic()
    while not all(load.has_served(tag) for load in loads):
        if time.monotonic() - started > FOLLOW_TIMEOUT:
            pytest.fail(f"not every replica served {tag} within {FOLLOW_TIMEOUT} s")
        await asyncio.sleep(0.05)
    return [
        min(a.finished for a in load.ok() if _row(a)["versions"]["cascade"] == tag) - since for load in loads
    ]


@pytest.mark.parametrize(("store", "n"), [("redis", 3), ("postgresql", 2)])
async def test_a_promotion_reaches_every_replica_under_load_without_a_failed_request(
    store: str, n: int, tmp_path: Path, demo: Any, champion_tag: str
) -> None:
    shared = {
        "SKEWGUARD_ALIAS_URL": f"{STORES[store]}?namespace=t{uuid.uuid4().hex[:10]}",
        "SKEWGUARD_MODEL_EXPORT": str(tmp_path / "export"),
    }
    rows = [request_row(demo, i) for i in range(-64, 0)]
    new_tag = candidate(champion_tag, threshold=0.35)
    thresholds = {champion_tag: load_manifest(champion_tag).router.threshold, new_tag: 0.35}
    with configured(shared["SKEWGUARD_ALIAS_URL"], shared["SKEWGUARD_MODEL_EXPORT"]):
        await asyncio.to_thread(promote, champion_tag)
        with _replicas(n, tmp_path, shared) as servers:
            assert [_served(s) for s in servers] == [champion_tag] * n  # imported at start
            async with _loads(servers, rows) as loads:
                await asyncio.sleep(1.0)
                await asyncio.to_thread(promote, new_tag)
                promoted = time.monotonic()
                delays = await _first_answer_from(loads, new_tag, promoted)
                await asyncio.sleep(0.5)
    print(f"\n{store}: {n} replicas served {new_tag} " + ", ".join(f"{d:.2f}" for d in delays) + " s after")
    answers = [a for load in loads for a in load.answers]
    failed = [(a.status, a.error, a.body) for a in answers if a.status != 200]
    assert failed == [], failed[:5]
    assert len(answers) > 100
    for load in loads:
        for client in range(load.clients):
            tags = [_row(a)["versions"]["cascade"] for a in load.answers if a.client == client]
            assert [t == new_tag for t in tags] == sorted(t == new_tag for t in tags), "went back"
    for answer in answers:  # each answer routed wholly by one version's threshold
        row = _row(answer)
        assert row["route"] == (
            "reseller" if row["router_probability"] >= thresholds[row["versions"]["cascade"]] else "retail"
        )
    exported = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert len(exported) == 5  # the router, two specialists and both manifests, once each


class _Loads:
    def __init__(self, servers: list[Server], rows: list[dict[str, Any]], clients: int) -> None:
        self.loads = [Load(server.url, rows, clients=clients) for server in servers]

    async def __aenter__(self) -> list[Load]:
        for load in self.loads:
            await load.__aenter__()
        return self.loads

    async def __aexit__(self, *exc_info: object) -> None:
        for load in self.loads:
            await load.__aexit__(*exc_info)


def _loads(servers: list[Server], rows: list[dict[str, Any]], clients: int = 4) -> _Loads:
    """Keep-alive clients on every replica, as a Service spreads them."""
    return _Loads(servers, rows, clients)


@contextmanager
def _redis_server(port: int) -> Iterator[None]:
    """A Redis of the test's own, without persistence: stopping it loses every alias."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is needed (the machine runs Redis; its server binary starts one more).")
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ping = ["redis-cli", "-p", str(port), "ping"]
        while subprocess.run(ping, capture_output=True, text=True, check=False).stdout.strip() != "PONG":
            assert process.poll() is None, f"redis-server on port {port} exited"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def _readiness(server: Server) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{server.url}/readyz", timeout=10)
    return response.status_code, response.json()


def _behind_metric(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    [line] = [line for line in text.splitlines() if line.startswith("skewguard_champion_behind ")]
    return float(line.split()[1])


async def _until(condition: Any) -> None:
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        if time.monotonic() - started > FOLLOW_TIMEOUT:
            pytest.fail(f"condition not met within {FOLLOW_TIMEOUT} s")
        await asyncio.sleep(0.2)


async def test_replicas_keep_serving_and_report_it_when_the_alias_store_or_an_archive_fails(
    tmp_path: Path, demo: Any, champion_tag: str
) -> None:
    port = _free_port()
    alias_url = f"redis://127.0.0.1:{port}/0"
    shared = {"SKEWGUARD_ALIAS_URL": alias_url, "SKEWGUARD_MODEL_EXPORT": str(tmp_path / "export")}
    rows = [request_row(demo, i) for i in range(-16, 0)]
    new_tag, tampered_tag = candidate(champion_tag, 0.35), candidate(champion_tag, 0.4)
    with configured(alias_url, shared["SKEWGUARD_MODEL_EXPORT"]) as sharing, ExitStack() as stack:
        first_redis = stack.enter_context(ExitStack())
        first_redis.enter_context(_redis_server(port))
        await asyncio.to_thread(promote, champion_tag)
        servers = stack.enter_context(_replicas(2, tmp_path, shared))
        async with _loads(servers, rows, clients=2) as loads:
            first_redis.close()  # the alias store is gone
            await _until(lambda: all("behind" in _readiness(s)[1] for s in servers))
            down = [_readiness(s) for s in servers]
            behind_while_down = [_behind_metric(s) for s in servers]
            with _redis_server(port):  # back, empty: the alias must be promoted again
                await asyncio.to_thread(promote, new_tag)
                await _first_answer_from(loads, new_tag, time.monotonic())
                await _until(lambda: all("behind" not in _readiness(s)[1] for s in servers))
                behind_after = [_behind_metric(s) for s in servers]
                # An alias whose archive digest does not match the export (changed after export).
                archives = await asyncio.to_thread(export_models, str(tmp_path / "export"), [tampered_tag])
                sharing.aliases.update(
                    CASCADE,
                    lambda alias: Alias(
                        champion=tampered_tag,
                        promoted_at=datetime.now(UTC),
                        archives={**(alias.archives if alias else {}), **archives, tampered_tag: "0" * 64},
                    ),
                )
                await _until(lambda: all("sha256" in _readiness(s)[1].get("behind", "") for s in servers))
                still = [_served(s) for s in servers]
    answers = [a for load in loads for a in load.answers]
    assert [a for a in answers if a.status != 200] == []
    assert [status for status, _ in down] == [200, 200]  # still in the Service: it serves what it has
    assert all(f"127.0.0.1:{port}" in body["behind"] for _, body in down), down
    assert behind_while_down == [1.0, 1.0]
    assert behind_after == [0.0, 0.0]
    assert still == [new_tag, new_tag]  # the archive that failed its check was never swapped in
    assert not any(_row(a)["versions"]["cascade"] == tampered_tag for a in answers)
