"""The gateway as a real process: ``skewguard serve`` (uvicorn) over Feast on SQLite and the model store.

Every test starts ``skewguard serve`` in a subprocess on a free port, serving the session's
packaged champion cascade ``gwtest`` with a Feast store applied and materialized for the
same demo data, and checks what an operator would notice: a promotion and an admin reload
swap the cascade under load without one failed request; SIGTERM under load loses no
logged prediction; a remote model that dies is a fast 503 and serving resumes when it is
back; and the serving process never imports the training stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from returns_data import DemoData

from skewguard.bentos.bento import build_bento, serve_command
from skewguard.bentos.manifest import compose_manifest, load_manifest, promote, save_manifest
from skewguard.predictionlog.records import read_records
from skewguard.settings import Settings
from tests.conftest import materialize_returns_features, returns_project
from tests.gateway.conftest import CASCADE, FEAST_PROJECT, request_row

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PREDICT = f"/v1/cascades/{CASCADE}/predict"
TOKEN = "gateway-test-token-3f9a"
SKEWGUARD = Path(sys.executable).with_name("skewguard")
PROJECT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0
CLIENTS = 16
TRAINING_STACK = ("sklearn", "skl2onnx", "evidently", "prefect")
NOT_SERVING = ("dask", "scipy", "psycopg", "pymysql")
"""Feast's offline store (dask, scipy) and the online stores not configured: ~40 MB unused."""
REMOTE_BUDGET_S = 1.0
"""The gateway's default request budget."""
RECOVERY_S = 2.0
"""A restarted model service is served again within this long after its /readyz."""
FAIL_FAST_S = REMOTE_BUDGET_S / 2
"""A request needing a model that is down is answered 503 within this: well before its budget."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A process we started, the URL it answers on, and where its output goes."""

    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def family(self) -> list[psutil.Process]:
        """The process and its descendants: BentoML's workers run in sessions of their own."""
        if self.popen.poll() is not None:  # reaped: its pid may belong to another process by now
            return []
        try:
            top = psutil.Process(self.popen.pid)
            return [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the process and every descendant, and reap them."""
        family = self.family()
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(family, timeout=10)
        self.popen.wait(timeout=10)


def _launch(command: list[str], env: Mapping[str, str], log: Path, url: str, cwd: Path) -> Server:
    with log.open("wb") as out:
        popen = subprocess.Popen(
            command, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(popen, url, log)


def _stop(server: Server) -> None:
    """SIGTERM (a graceful stop), then SIGKILL for whatever of the family is left after 10 s."""
    family = server.family()
    if server.popen.poll() is None:
        server.popen.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    if alive or server.popen.poll() is None:
        server.kill()
    server.popen.wait(timeout=10)


def _wait_ready(server: Server, timeout: float = STARTUP_TIMEOUT) -> float:
    """Poll ``/readyz`` until it answers 200; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.popen.poll() is not None:
            pytest.fail(f"{server.url} exited with {server.popen.returncode}:\n{server.tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/readyz", timeout=2.0).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"{server.url} was not ready after {timeout} s:\n{server.tail()}")


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    """Wait until every server is ready (they start in parallel); stop them all afterwards."""
    try:
        for server in servers:
            _wait_ready(server)
        yield
    finally:
        for server in servers:
            _stop(server)


def gateway(home: Path, folder: Path, name: str = "gateway", **env: str) -> Server:
    """``skewguard serve`` over ``home`` (Feast) and the session's model store, logging into ``folder``."""
    port = _free_port()
    values = {
        **os.environ,
        "SKEWGUARD_HOME": str(home),
        "BENTOML_HOME": os.environ["BENTOML_HOME"],
        "SKEWGUARD_CASCADES": CASCADE,
        "SKEWGUARD_PORT": str(port),
        "SKEWGUARD_WATCH_SECONDS": "0.2",
        "SKEWGUARD_LOG_URL": f"sqlite:///{folder / 'predictions.db'}",
        **env,
    }
    return _launch(
        [str(SKEWGUARD), "serve"], values, folder / f"{name}.log", f"http://127.0.0.1:{port}", folder
    )


def bento(tag: str, port: int, folder: Path, name: str) -> Server:
    """``bentoml serve <bento>`` on ``port``, run from a folder without our sources."""
    url = f"http://127.0.0.1:{port}"
    return _launch(serve_command(tag, port), os.environ, folder / f"{name}.log", url, folder)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo: DemoData, champion_tag: str) -> Path:
    """A skewguard home whose Feast project (SQLite) is applied and materialized for the demo data."""
    folder = tmp_path_factory.mktemp("gateway-home")
    project = returns_project(folder / "project", demo)
    materialize_returns_features(Settings(home=folder), FEAST_PROJECT, project)
    return folder


@dataclass
class Answer:
    """One request as a client saw it; ``status`` None means no HTTP answer at all."""

    client: int
    seconds: float
    status: int | None
    body: Any = None
    error: str = ""
    finished: float = field(default_factory=time.monotonic)
    """When the answer came (``time.monotonic()``)."""


@dataclass
class Load:
    """``clients`` concurrent keep-alive clients sending single-row predicts back to back.

    ``async with Load(...) as load:`` runs them; leaving the block stops them and waits.
    """

    url: str
    rows: list[dict[str, Any]]
    clients: int = CLIENTS
    headers: dict[str, str] = field(default_factory=dict)
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
        return any(_row(a)["versions"]["cascade"] == cascade_tag for a in self.ok())

    async def _client(self, i: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0, headers=self.headers) as client:
            n = i
            while not self._stop.is_set():
                n += 1
                started = time.monotonic()
                try:
                    response = await client.post(PREDICT, json=self.rows[n % len(self.rows)])
                except httpx.TransportError as exc:  # refused or dropped: no answer
                    self.answers.append(Answer(i, time.monotonic() - started, None, error=type(exc).__name__))
                    await asyncio.sleep(0.02)
                    continue
                body = response.json() if response.headers.get("content-type") == "application/json" else None
                self.answers.append(Answer(i, time.monotonic() - started, response.status_code, body))


def _row(answer: Answer) -> dict[str, Any]:
    [row] = answer.body["predictions"]
    return dict(row)


async def _wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition()`` holds, polled every 20 ms; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _save_candidate(champion_tag: str, threshold: float) -> str:
    """A second manifest over the champion's own models, differing only in its threshold."""
    current = load_manifest(champion_tag)
    assert current.router is not None
    rule = {"routes": current.router.routes, "threshold": threshold, "positive_class": "1"}
    fields = current.model_dump(include={"feature_project", "feature_ttl_seconds", "event_time_field"})
    manifest = compose_manifest(
        CASCADE, router_tag=current.router.tag, branches=current.branches, **rule, **fields
    )
    return save_manifest(manifest)


def _mapped_training_libraries(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in TRAINING_STACK if f"/{name}/" in maps}


async def test_promotion_and_reload_swap_the_cascade_under_load_without_a_failed_request(
    home: Path, tmp_path: Path, demo: DemoData, champion_tag: str
) -> None:
    thresholds = {champion_tag: load_manifest(champion_tag).router.threshold}
    new_tag = _save_candidate(champion_tag, threshold=0.35)
    thresholds[new_tag] = 0.35
    server = gateway(home, tmp_path, SKEWGUARD_API_TOKEN=TOKEN)  # admin is closed without a token
    rows = [request_row(demo, i) for i in range(-64, 0)]
    bearer = {"authorization": f"Bearer {TOKEN}"}
    try:
        with running(server):
            async with (
                Load(server.url, rows, headers=bearer) as load,
                httpx.AsyncClient(base_url=server.url, headers=bearer) as admin,
            ):
                await asyncio.sleep(1.0)
                await asyncio.to_thread(promote, new_tag)
                switch = await _wait_for(lambda: load.has_served(new_tag), timeout=5.0)
                reloaded = await admin.post("/v1/admin/reload", timeout=10.0)
                await asyncio.sleep(1.0)
                listed = (await admin.get("/v1/cascades")).json()["cascades"]
            mapped = _mapped_training_libraries(server.popen.pid)
    finally:
        await asyncio.to_thread(promote, champion_tag)  # the session's other tests expect their champion
    answers = load.answers
    print(f"\n{len(answers)} requests; the watcher served the promotion after {switch:.2f} s")
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json() == {"reloaded": [new_tag]}
    assert [(c["version"], c["threshold"]) for c in listed] == [(new_tag, 0.35)]
    failed = [(a.status, a.error, a.body) for a in answers if a.status != 200]
    assert failed == [], failed[:5]
    assert len(answers) > 100
    for client in range(CLIENTS):
        tags = [_row(a)["versions"]["cascade"] for a in answers if a.client == client]
        switched = [tag == new_tag for tag in tags]
        assert switched == sorted(switched), f"client {client} went back to the old cascade"
        assert tags[-1] == new_tag
    for answer in answers:  # each answer routed wholly by one version's threshold
        row = _row(answer)
        threshold = thresholds[row["versions"]["cascade"]]
        assert row["route"] == ("reseller" if row["router_probability"] >= threshold else "retail")
    assert {_row(a)["versions"]["cascade"] for a in answers} == {champion_tag, new_tag}
    assert mapped == set()


async def test_sigterm_under_load_logs_every_answered_prediction_exactly_once(
    home: Path, tmp_path: Path, demo: DemoData
) -> None:
    server = gateway(home, tmp_path)
    with running(server):
        async with Load(server.url, [request_row(demo, i) for i in range(-64, 0)]) as load:
            await asyncio.sleep(1.5)
            server.popen.send_signal(signal.SIGTERM)
            stopping = time.monotonic()
            code = await asyncio.to_thread(server.popen.wait, 20)
            stopped = time.monotonic() - stopping
            await asyncio.sleep(0.2)  # the clients now meet a closed port
    answers = load.answers
    records = read_records(f"sqlite:///{tmp_path / 'predictions.db'}")
    ok = load.ok()
    refused = [a for a in answers if a.status is None]
    print(f"\n{len(ok)} answered, {len(refused)} refused; stopped {stopped:.2f} s after SIGTERM")
    assert code in (0, -signal.SIGTERM), server.tail()
    assert {a.status for a in answers} <= {200, None}, [
        a.body for a in answers if a.status not in (200, None)
    ]
    assert {a.error for a in refused} <= {"ConnectError", "RemoteProtocolError", "ReadError", "WriteError"}
    assert len(ok) > 100
    assert len(records) == len(ok)
    assert len({r["request_id"] for r in records}) == len(records)
    assert "not written before shutdown" not in server.tail(20_000)


def _same_predictions(got: dict[str, Any], want: dict[str, Any]) -> None:
    for mine, theirs in zip(got["predictions"], want["predictions"], strict=True):
        assert (mine["route"], mine["prediction"]) == (theirs["route"], theirs["prediction"])
        assert mine["router_probability"] == pytest.approx(theirs["router_probability"], abs=1e-9)
        assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-9)


async def _colocated_answer(home: Path, folder: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the co-located gateway answers (in process, same Feast store and model store)."""
    from asgi_lifespan import LifespanManager

    from skewguard.gateway.app import create_app
    from skewguard.gateway.server import build_gateway
    from skewguard.gateway.settings import GatewaySettings

    settings = GatewaySettings.from_env(
        {
            "SKEWGUARD_HOME": str(home),
            "SKEWGUARD_CASCADES": CASCADE,
            "SKEWGUARD_WATCH_SECONDS": "0",
            "SKEWGUARD_LOG_URL": f"sqlite:///{folder / 'colocated.db'}",
        }
    )
    async with LifespanManager(create_app(build_gateway(settings)), startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.post(PREDICT, json={"rows": rows})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_remote_router_matches_colocated_fails_fast_when_down_and_recovers(
    home: Path, tmp_path: Path, demo: DemoData, champion_tag: str
) -> None:
    router = load_manifest(champion_tag).router.tag
    started = time.monotonic()
    bento_tag = await asyncio.to_thread(build_bento, router)
    print(f"\nBento {bento_tag} built in {time.monotonic() - started:.1f} s")
    port = _free_port()
    service = bento(bento_tag, port, tmp_path, "bento")
    remote = json.dumps({router.partition(":")[0]: service.url})
    budget = str(int(REMOTE_BUDGET_S * 1000))
    server = gateway(home, tmp_path, SKEWGUARD_REMOTE_MODELS=remote, SKEWGUARD_REQUEST_BUDGET_MS=budget)
    rows = [request_row(demo, i) for i in range(-30, 0)]
    restarted: Server | None = None
    try:
        with running(service, server):
            async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as client:
                answer = await client.post(PREDICT, json={"rows": rows})
                assert answer.status_code == 200, answer.text + server.tail()
                assert (await client.get("/readyz")).json() == {"ready": True, "problems": []}
                expected = await _colocated_answer(home, tmp_path, rows)
                assert len({r["route"] for r in answer.json()["predictions"]}) == 2
                _same_predictions(answer.json(), expected)

                async with Load(server.url, rows, clients=2) as load:  # killed and restarted under load
                    await asyncio.sleep(0.5)
                    killed = time.monotonic()
                    await asyncio.to_thread(service.kill)  # not blocking the loop the clients time on
                    down = [await _timed_post(client, rows[i]) for i in range(10)]
                    assert [(s, b.get("code")) for _, s, b in down] == [(503, "upstream_unavailable")] * 10
                    # Fail fast: each 503 is answered well before the request budget would have run out.
                    assert max(seconds for seconds, _, _ in down) < FAIL_FAST_S
                    not_ready = await client.get("/readyz")
                    assert not_ready.status_code == 503, not_ready.text
                    assert [p for p in not_ready.json()["problems"] if router in p], not_ready.text

                    restarted = bento(bento_tag, port, tmp_path, "bento-again")
                    ready = await asyncio.to_thread(_wait_ready, restarted)
                    serving_again = time.monotonic()
                    while (status := (await _timed_post(client, rows[0]))[1]) != 200:
                        assert status == 503
                        assert time.monotonic() - serving_again < RECOVERY_S, (
                            f"no 200 within {RECOVERY_S} s of the restarted model's /readyz"
                        )
                        await asyncio.sleep(0.05)
                    recovered = time.monotonic() - serving_again
                    await asyncio.sleep(0.5)
                ready_again = await client.get("/readyz")
                assert ready_again.status_code == 200, ready_again.text
    finally:
        if restarted is not None:
            _stop(restarted)
    print(f"Bento back in {ready:.1f} s; the gateway answered 200 {recovered:.2f} s after its /readyz")
    print(f"while down: {max(seconds for seconds, _, _ in down) * 1000:.0f} ms at most per 503")
    # The load saw 200s and the JSON 503 of a model that is down, nothing else: no 504 while the
    # restarted service starts (its port accepts connections before it answers), as the circuit
    # stays open until its /readyz answers 200.
    seen = Counter((a.status, a.error or (a.body or {}).get("code", "")) for a in load.answers)
    print(f"under load: {seen}")
    assert {a.status for a in load.answers} == {200, 503}, seen
    failed = [a for a in load.answers if a.status != 200]
    assert {a.body["code"] for a in failed} == {"upstream_unavailable"}
    slowest = max(a.seconds for a in failed)
    # Sent after the kill and answered 200: by the restarted service.
    back = min(a.finished for a in load.ok() if a.finished - a.seconds > killed) - serving_again
    print(
        f"under load: {slowest * 1000:.0f} ms at most per 503; served again {back:.2f} s after"
        " the restarted model's /readyz"
    )
    assert slowest < FAIL_FAST_S
    assert back < RECOVERY_S
    assert load.answers[-1].status == 200


async def _timed_post(client: httpx.AsyncClient, row: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    started = time.monotonic()
    response = await client.post(PREDICT, json=row)
    return time.monotonic() - started, response.status_code, response.json()


PROBE = """
import asyncio, json, sys
import httpx
from asgi_lifespan import LifespanManager
import skewguard.cli
from skewguard.gateway.app import create_app
from skewguard.gateway.server import build_gateway
from skewguard.gateway.settings import GatewaySettings

async def main():
    gateway = build_gateway(GatewaySettings.from_env())
    async with LifespanManager(create_app(gateway), startup_timeout=60) as manager:  # reload, ping, log
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.post("/v1/cascades/gwtest/predict", json=json.loads(sys.argv[1]))
            assert response.status_code == 200, response.text
        await gateway.reload()  # what a promotion or POST /v1/admin/reload does

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


def test_the_serving_process_imports_no_training_stack(home: Path, tmp_path: Path, demo: DemoData) -> None:
    env = {
        **os.environ,
        "SKEWGUARD_HOME": str(home),
        "SKEWGUARD_CASCADES": CASCADE,
        "SKEWGUARD_WATCH_SECONDS": "0",
        "SKEWGUARD_LOG_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
    }
    command = [sys.executable, "-c", textwrap.dedent(PROBE), json.dumps(request_row(demo))]
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    modules = {name.partition(".")[0] for name in loaded}
    assert {"skewguard", "onnxruntime", "feast"} <= modules
    assert "skewguard.gateway.app" in loaded  # the packages are installed under one namespace
    # the model store is read without bentoml.models, whose analytics import cost ~0.3 s of start
    assert {"bentoml", "bentoml._internal.models"} <= loaded
    assert "bentoml.models" not in loaded
    assert "bentoml._internal.utils.analytics" not in loaded
    assert modules & set(TRAINING_STACK) == set()
    assert modules & set(NOT_SERVING) == set()
