"""Faults with real processes: the gateway degrades as configured, never crashes, and recovers.

Each test runs ``skewguard serve`` (uvicorn) over the session's champion cascade ``gwtest``
and breaks one thing it depends on, for real:

- the online store: a Redis server of our own on a free port (never the machine's shared
  one on 6379), killed and restarted → ``degrade`` answers 200 with defaults and a flag,
  ``reject`` answers 503 with a JSON error, and both serve features again once it is back;
- a model slower than the request budget: a uvicorn app standing in for the router's
  BentoML service at its remote URL → 504 with a JSON error when the budget runs out,
  and 200 again when the model is fast;
- the prediction log's database: PostgreSQL (the shared server, or
  ``SKEWGUARD_TEST_POSTGRES_URL``; a database of our own) reached through a TCP proxy
  process that we kill → serving goes on, records queue up to
  ``SKEWGUARD_LOG_QUEUE`` and are written when it returns; beyond the bound they are
  counted as dropped in ``/metrics``.

The killed remote BentoML service is in ``test_server.py``
(``test_remote_router_matches_colocated_fails_fast_when_down_and_recovers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from returns_data import DemoData

from skewguard.bentos.manifest import load_manifest
from skewguard.settings import Settings
from tests.conftest import materialize_returns_features, returns_project
from tests.gateway.conftest import FEAST_PROJECT, request_row
from tests.gateway.test_server import (
    PREDICT,
    Load,
    Server,
    _free_port,
    _launch,
    _stop,
    gateway,
    running,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

POSTGRES_URL = os.environ.get("SKEWGUARD_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
FEATURE_STORE_DOWN = "feature_store_unavailable"


def materialized_home(folder: Path, demo: DemoData, **settings: Any) -> Path:
    """A skewguard home whose Feast project (SQLite, or as ``settings`` say) holds the demo data."""
    project = returns_project(folder / "project", demo)
    materialize_returns_features(Settings(home=folder, **settings), FEAST_PROJECT, project)
    return folder


@pytest.fixture(scope="module")
def sqlite_home(tmp_path_factory: pytest.TempPathFactory, demo: DemoData, champion_tag: str) -> Path:
    return materialized_home(tmp_path_factory.mktemp("faults-home"), demo)


async def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll ``condition()`` (sync or async) every 50 ms until it is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


def _alive_and_clean(*servers: Server) -> None:
    """No crash: each process still runs, and logged no traceback (an unexpected error)."""
    for server in servers:
        assert server.popen.poll() is None, server.tail()
        assert "Traceback" not in server.tail(1_000_000), server.tail()


def _metric(text: str, name: str, **labels: str) -> float:
    """A sample of the Prometheus text ``text``; 0 when absent (a counter never incremented)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    head = f"{name}{{{wanted}}}" if wanted else name
    for line in text.splitlines():
        if line.startswith(head + " "):
            return float(line.split()[-1])
    return 0.0


# --- the online store (Redis) stops ----------------------------------------------------------


def _redis(folder: Path, port: int, name: str) -> Server:
    """Our own ``redis-server``: its dump in ``folder``, so a restart reloads the features."""
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(folder), "--dbfilename", "dump.rdb"]
    return _launch(command, os.environ, folder / f"{name}.log", f"redis://127.0.0.1:{port}", folder)


def _wait_redis(server: Server, port: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    for _ in range(200):
        if server.popen.poll() is not None:
            pytest.fail(f"redis-server exited with {server.popen.returncode}:\n{server.tail()}")
        with contextlib.suppress(redis.exceptions.ConnectionError):
            if client.ping():
                return
        time.sleep(0.05)
    pytest.fail(f"redis-server on {port} did not answer:\n{server.tail()}")


def _defaulted(body: dict[str, Any]) -> bool:
    [row] = body["predictions"]
    kinds = {flag["kind"] for flag in row["skew_flags"]}
    return bool(row["defaults_used"]) and FEATURE_STORE_DOWN in kinds


def _fetched(response: httpx.Response) -> bool:
    """A 200 whose online features came from the store (not defaults)."""
    return response.status_code == 200 and not response.json()["predictions"][0]["defaults_used"]


async def test_redis_stopped_degrades_or_rejects_as_configured_and_recovers(
    tmp_path: Path, demo: DemoData, champion_tag: str
) -> None:
    port = _free_port()
    store = _redis(tmp_path, port, "redis")
    redis_url = f"127.0.0.1:{port}"
    restarted: Server | None = None
    try:
        _wait_redis(store, port)
        home = materialized_home(tmp_path / "home", demo, online_store="redis", redis_url=redis_url)
        online = {"SKEWGUARD_ONLINE_STORE": "redis", "SKEWGUARD_REDIS_URL": redis_url}
        degrade = gateway(
            home, tmp_path, "degrade", **online, SKEWGUARD_LOG_URL=f"sqlite:///{tmp_path / 'degrade.db'}"
        )
        strict = gateway(
            home,
            tmp_path,
            "strict",
            **online,
            SKEWGUARD_ON_FEATURE_STORE_ERROR="reject",
            SKEWGUARD_LOG_URL=f"sqlite:///{tmp_path / 'strict.db'}",
        )
        row = request_row(demo)
        rows = [request_row(demo, i) for i in range(-32, 0)]
        with running(degrade, strict):
            async with httpx.AsyncClient(timeout=10.0) as client:
                for server in (degrade, strict):  # features really come from our Redis
                    assert _fetched(await client.post(server.url + PREDICT, json=row)), server.tail()
                redis.Redis(host="127.0.0.1", port=port).save()  # so the restart reloads the features
                async with (
                    Load(degrade.url, rows, clients=2) as on_degrade,
                    Load(strict.url, rows, clients=2) as on_strict,
                ):
                    await asyncio.sleep(0.5)
                    store.kill()  # SIGKILL: a crash, not a polite shutdown
                    await asyncio.sleep(1.0)
                    soft = await client.post(degrade.url + PREDICT, json=row)
                    hard = await client.post(strict.url + PREDICT, json=row)
                    not_ready = [(await client.get(s.url + "/readyz")) for s in (degrade, strict)]
                    restarted = _redis(tmp_path, port, "redis-again")
                    await asyncio.to_thread(_wait_redis, restarted, port)
                    for server in (degrade, strict):
                        url = server.url + PREDICT
                        fetched = functools.partial(_wait_fetched, client, url, row)
                        await _wait_for(fetched, 10.0, f"features again at {url}")
                ready = [(await client.get(s.url + "/readyz")).status_code for s in (degrade, strict)]
            _alive_and_clean(degrade, strict)
    finally:
        for redis_server in (store, restarted):
            if redis_server is not None:
                _stop(redis_server)

    assert soft.status_code == 200, soft.text
    assert _defaulted(soft.json()), soft.json()
    assert hard.status_code == 503, hard.text
    assert hard.headers["content-type"] == "application/json"
    assert hard.json()["code"] == FEATURE_STORE_DOWN
    assert redis_url in hard.json()["message"]
    assert [r.status_code for r in not_ready] == [503, 503]
    assert all(redis_url in " ".join(r.json()["problems"]) for r in not_ready)
    assert ready == [200, 200]
    # Under load through the outage: degrade never failed a request; strict failed with 503 only.
    assert {a.status for a in on_degrade.answers} == {200}
    assert any(_defaulted(a.body) for a in on_degrade.ok())
    assert {a.status for a in on_strict.answers} == {200, 503}
    assert {a.body["code"] for a in on_strict.answers if a.status == 503} == {FEATURE_STORE_DOWN}


async def _wait_fetched(client: httpx.AsyncClient, url: str, row: dict[str, Any]) -> bool:
    return _fetched(await client.post(url, json=row))


# --- a model slower than the request budget ----------------------------------------------------

SLOW_MODEL = """
import asyncio, os
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

delay = {"seconds": float(os.environ["MODEL_DELAY_S"])}

async def predict(request):
    rows = (await request.json())["rows"]
    await asyncio.sleep(delay["seconds"])
    answer = {"label": 1, "probabilities": {"0": 0.25, "1": 0.75}}
    return JSONResponse({"predictions": [answer for _ in rows]})

async def set_delay(request):
    delay["seconds"] = float((await request.json())["seconds"])
    return JSONResponse(delay)

async def readyz(request):
    return JSONResponse({"ready": True})

app = Starlette(routes=[
    Route("/predict", predict, methods=["POST"]),
    Route("/delay", set_delay, methods=["POST"]),
    Route("/readyz", readyz),
])
"""
BUDGET_S = 0.4
MODEL_DELAY_S = 3.0
GRACE_S = 0.5
"""What answering takes beyond the budget itself (HTTP both ways, a busy shared machine)."""


def _slow_model(folder: Path) -> Server:
    """The router's remote service, answering a fixed P(reseller) = 0.75 after a settable delay."""
    (folder / "slowmodel.py").write_text(SLOW_MODEL)
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "slowmodel:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "PYTHONPATH": str(folder), "MODEL_DELAY_S": str(MODEL_DELAY_S)}
    return _launch(command, env, folder / "slowmodel.log", f"http://127.0.0.1:{port}", folder)


async def _timed(client: httpx.AsyncClient, url: str, row: dict[str, Any]) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = await client.post(url, json=row)
    return time.monotonic() - started, response


async def test_a_model_slower_than_the_budget_is_a_504_and_the_gateway_keeps_serving(
    sqlite_home: Path, tmp_path: Path, demo: DemoData, champion_tag: str
) -> None:
    router = load_manifest(champion_tag).router
    assert router is not None
    model = _slow_model(tmp_path)
    remote = json.dumps({router.tag.partition(":")[0]: model.url})
    budget = str(int(BUDGET_S * 1000))
    server = gateway(
        sqlite_home, tmp_path, SKEWGUARD_REMOTE_MODELS=remote, SKEWGUARD_REQUEST_BUDGET_MS=budget
    )
    rows = [request_row(demo, i) for i in range(-8, 0)]
    with running(model, server):
        async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
            slow = await asyncio.gather(*(_timed(client, PREDICT, row) for row in rows))
            health = await client.get("/healthz")
            await client.post(model.url + "/delay", json={"seconds": 0})
            fast = await client.post(PREDICT, json=rows[0])
            metrics = (await client.get("/metrics")).text
        _alive_and_clean(server)

    for seconds, response in slow:
        assert response.status_code == 504, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "upstream_timeout"
        assert router.tag in response.json()["message"]
        # The budget is what cut it: not answered before it ran out, nor waiting for the model.
        assert BUDGET_S <= seconds < BUDGET_S + GRACE_S
    assert health.status_code == 200
    assert fast.status_code == 200, fast.text
    [answer] = fast.json()["predictions"]
    assert (answer["route"], answer["router_probability"]) == (router.routes["1"], 0.75)
    assert _metric(metrics, "skewguard_errors_total", code="upstream_timeout", status="504") == len(rows)


# --- the prediction log's database is unreachable -------------------------------------------

PROXY = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def handle(reader, writer):
    try:
        upstream = await asyncio.open_connection(sys.argv[2], int(sys.argv[3]))
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, upstream[1]), pipe(upstream[0], writer))

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""
LOG_QUEUE = 150


def _proxy(folder: Path, port: int, name: str) -> Server:
    """A TCP proxy process from ``port`` to the shared PostgreSQL: killing it takes the database away."""
    info = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL)
    target = [str(info.get("host", "127.0.0.1")), str(info.get("port", 5432))]
    command = [sys.executable, "-c", PROXY, str(port), *target]
    server = _launch(command, os.environ, folder / f"{name}.log", f"tcp://127.0.0.1:{port}", folder)
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return server
        time.sleep(0.05)
    pytest.fail(f"the proxy did not listen on {port}:\n{server.tail()}")


@contextlib.contextmanager
def _database() -> Iterator[str]:
    """A database of our own on the shared PostgreSQL (the gateway's table name is fixed)."""
    name = f"skewguard_faults_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _logged(dbname: str) -> int:
    url = psycopg.conninfo.make_conninfo(POSTGRES_URL, dbname=dbname)
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('predictions') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            return 0
        row = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()
        return int(row[0]) if row else 0


async def _serve(client: httpx.AsyncClient, rows: list[dict[str, Any]], n: int) -> list[int]:
    """``n`` predicts, 16 at a time; their statuses."""
    statuses: list[int] = []
    for start in range(0, n, 16):
        batch = [rows[i % len(rows)] for i in range(start, min(start + 16, n))]
        answers = await asyncio.gather(*(client.post(PREDICT, json=row) for row in batch))
        statuses += [answer.status_code for answer in answers]
    return statuses


async def _log_gauges(client: httpx.AsyncClient) -> tuple[float, float]:
    text = (await client.get("/metrics")).text
    queued = _metric(text, "skewguard_prediction_log_queued")
    return queued, _metric(text, "skewguard_prediction_log_dropped_total")


async def _queued(client: httpx.AsyncClient, n: int) -> bool:
    return (await _log_gauges(client))[0] == n


async def test_log_database_down_keeps_serving_buffers_to_the_bound_then_counts_drops(
    sqlite_home: Path, tmp_path: Path, demo: DemoData
) -> None:
    port = _free_port()
    rows = [request_row(demo, i) for i in range(-64, 0)]
    proxies: list[Server] = []
    with _database() as dbname:
        proxies.append(_proxy(tmp_path, port, "proxy"))
        user = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL).get("user", "root")
        log_url = f"postgresql://{user}@127.0.0.1:{port}/{dbname}"
        server = gateway(sqlite_home, tmp_path, SKEWGUARD_LOG_URL=log_url, SKEWGUARD_LOG_QUEUE=str(LOG_QUEUE))
        try:
            with running(server):
                async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
                    served = await _serve(client, rows, 20)
                    await _wait_for(lambda: _logged(dbname) == 20, 20.0, "20 records written")

                    proxies[-1].kill()  # the database is gone: below the bound, nothing is lost
                    served += await _serve(client, rows, 100)
                    below = await _log_gauges(client)
                    proxies.append(_proxy(tmp_path, port, "proxy-back"))
                    await _wait_for(lambda: _logged(dbname) == 120, 30.0, "the 100 buffered written")
                    await _wait_for(lambda: _queued(client, 0), 5.0, "the queue empty")
                    after_return = await _log_gauges(client)

                    proxies[-1].kill()  # gone again, and this time the queue overflows
                    served += await _serve(client, rows, LOG_QUEUE + 40)
                    beyond = await _log_gauges(client)
                    proxies.append(_proxy(tmp_path, port, "proxy-back-again"))
                    await _wait_for(lambda: _logged(dbname) == 120 + LOG_QUEUE, 30.0, "the bound written")
                    await _wait_for(lambda: _queued(client, 0), 5.0, "the queue empty")
                    final = await _log_gauges(client)
                _alive_and_clean(server)
        finally:
            for proxy in proxies:
                _stop(proxy)
        logged = _logged(dbname)

    assert served == [200] * (120 + LOG_QUEUE + 40)  # serving never noticed
    assert below == (100, 0)
    assert after_return == (0, 0)
    assert beyond == (LOG_QUEUE, 40)  # never silently: the 40 beyond the bound are counted
    assert final == (0, 40)
    assert logged == 120 + LOG_QUEUE
    tail = server.tail(1_000_000)
    assert "dropping records" in tail
    assert "could not write" in tail  # the outage itself is logged
