"""Security of the serving path: no unpickling, tamper-evident models, constant-time tokens, quiet logs.

* A fresh interpreter imports the serving entry points (``gateway.server``, ``gateway.app``,
  ``skewguard.bentos.service``), serves a prediction through the gateway and through the Bento
  service's class, and reports what it imported and whether anything was unpickled: the
  audit event ``pickle.find_class`` and wrappers around ``pickle.load``/``loads``/``Unpickler``
  installed before anything else was imported.
* A model file changed after packaging is refused at load (``tests/bentos/test_store.py``
  covers the store; here the gateway's reload refuses it and keeps serving the old one).
* The bearer token's check is ``hmac.compare_digest``'s decision alone.
* Logs at DEBUG, through good and failing requests, hold neither the token nor any
  stretch of an image's base64 text; the prediction log holds an image's hash and stats.
(That the container runs as non-root is checked with the container image's own tests.)
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from returns_data import DemoData

from skewguard.bentos.manifest import champion
from skewguard.bentos.store import MODEL_FILE, load_model
from skewguard.errors import ArtifactError
from skewguard.gateway.app import create_app
from skewguard.gateway.features import StaticFeatureSource
from tests.gateway.conftest import CASCADE, make_gateway, request_row

pytestmark = pytest.mark.anyio
PREDICT = f"/v1/cascades/{CASCADE}/predict"
TOKEN = "tok-5f1c9e0b7a2d4e8f9c3b6a1d0e7f2c4b"
PICKLE_LIBRARIES = ("joblib", "cloudpickle", "dill", "sklearn", "skl2onnx")

SERVE_AND_REPORT = r"""
import json, pickle, sys, traceback

unpickled = []


def audit(event, args):
    if event == "pickle.find_class":
        unpickled.append(f"{event} {args}")


sys.addaudithook(audit)


def recorded(name, original):
    def call(*args, **kwargs):
        unpickled.append(name)
        return original(*args, **kwargs)
    return call


pickle.load, pickle.loads = recorded("pickle.load", pickle.load), recorded("pickle.loads", pickle.loads)


class Unpickler(pickle.Unpickler):
    def __init__(self, *args, **kwargs):
        unpickled.append("pickle.Unpickler")
        super().__init__(*args, **kwargs)


pickle.Unpickler = Unpickler
importers = {}


class WhoImports:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in %(libraries)r:
            frames = [f.filename for f in traceback.extract_stack() if "importlib" not in f.filename]
            importers.setdefault(name.split(".")[0], frames[-2:])
        return None


sys.meta_path.insert(0, WhoImports())

import asyncio, os, types
import httpx
from asgi_lifespan import LifespanManager
import skewguard.gateway.app, skewguard.gateway.server, skewguard.bentos.service
from skewguard.gateway.features import StaticFeatureSource
from skewguard.gateway.settings import GatewaySettings

request = json.load(sys.stdin)


async def through_the_gateway():
    settings = GatewaySettings.from_env(
        {
            "SKEWGUARD_HOME": request["home"],
            "SKEWGUARD_CASCADES": request["cascade"],
            "SKEWGUARD_WATCH_SECONDS": "0",
        }
    )
    gateway = skewguard.gateway.server.build_gateway(settings, features=StaticFeatureSource({}))
    app = skewguard.gateway.app.create_app(gateway)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.post(f"/v1/cascades/{request['cascade']}/predict", json=request["row"])
    return response.status_code


async def through_the_bento_service():
    service = skewguard.bentos.service.OnnxModelService()
    ctx = types.SimpleNamespace(response=types.SimpleNamespace(status_code=200))
    answer = await service.predict([request["model_row"]], ctx)
    return len(answer["predictions"])


print(json.dumps({
    "gateway_status": asyncio.run(through_the_gateway()),
    "bento_predictions": asyncio.run(through_the_bento_service()),
    "unpickled": unpickled,
    "modules": sorted(m for m in %(libraries)r if m in sys.modules),
    "importers": importers,
}))
"""


@pytest.mark.slow
def test_serving_entry_points_unpickle_nothing(tmp_path: Path, champion_tag: str, demo: DemoData) -> None:
    manifest = champion(CASCADE)
    assert manifest is not None
    router = load_model(manifest.model_tags()["router"])
    row = request_row(demo)
    request = {
        "home": str(tmp_path),
        "cascade": CASCADE,
        "row": row,
        "model_row": {name: row.get(name, 1.0) for name in router.spec.names},
    }
    script = SERVE_AND_REPORT % {"libraries": PICKLE_LIBRARIES}
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SKEWGUARD_MODEL": router.tag},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["gateway_status"], report["bento_predictions"]) == (200, 1)
    assert report["unpickled"] == []
    # pyarrow (under pandas) imports cloudpickle as its serializer; nothing else may, and nothing calls it
    assert set(report["modules"]) <= {"cloudpickle"}, report
    for library, frames in report["importers"].items():
        assert library == "cloudpickle", report
        assert any("/pyarrow/" in frame for frame in frames), report


async def test_a_tampered_model_is_refused_at_reload_and_the_old_one_keeps_serving(
    tmp_path: Path, demo: DemoData, champion_tag: str
) -> None:
    manifest = champion(CASCADE)
    assert manifest is not None
    graph = load_model(manifest.model_tags()["retail"]).path / MODEL_FILE
    original = graph.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    gateway = make_gateway(tmp_path, StaticFeatureSource({}), SKEWGUARD_API_TOKEN=TOKEN)
    async with LifespanManager(create_app(gateway)) as manager:  # admin needs the token
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=_bearer(TOKEN)
        ) as client:
            graph.write_bytes(bytes(tampered))
            try:
                with pytest.raises(ArtifactError, match="sha256"):
                    load_model(manifest.model_tags()["retail"])
                reload = await client.post("/v1/admin/reload")
                rows = [request_row(demo, i) for i in range(-20, 0)]
                served = await client.post(PREDICT, json={"rows": rows})
            finally:
                graph.write_bytes(original)
    assert reload.status_code == 500
    assert reload.json()["code"] == "artifact_invalid"
    assert MODEL_FILE in reload.json()["message"]
    assert served.status_code == 200, served.text
    answers = served.json()["predictions"]
    assert {a["versions"]["cascade"] for a in answers} == {champion_tag}
    assert "retail" in {a["route"] for a in answers}


@pytest.mark.parametrize("decision", [True, False])
async def test_the_token_check_is_compare_digests_decision(
    tmp_path: Path,
    champion_tag: str,
    demo: DemoData,
    monkeypatch: pytest.MonkeyPatch,
    decision: bool,
) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def compare_digest(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return decision

    gateway = make_gateway(tmp_path, StaticFeatureSource({}), SKEWGUARD_API_TOKEN=TOKEN)
    async with LifespanManager(create_app(gateway)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            monkeypatch.setattr(hmac, "compare_digest", compare_digest)
            sent = "wrong-token" if decision else TOKEN  # the opposite of what compare_digest will say
            response = await client.post(PREDICT, json=request_row(demo), headers=_bearer(sent))
            monkeypatch.undo()
    assert response.status_code == (200 if decision else 401), response.text
    assert calls == [(f"Bearer {sent}".encode(), f"Bearer {TOKEN}".encode())]


async def test_logs_hold_neither_the_token_nor_image_bytes(
    tmp_path: Path, champion_tag: str, demo: DemoData, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rows = [request_row(demo, i) for i in range(-3, 0)]
    broken = rows[0] | {"image": base64.b64encode(base64.b64decode(rows[0]["image"])[:200]).decode()}
    gateway = make_gateway(tmp_path, StaticFeatureSource({}), SKEWGUARD_API_TOKEN=TOKEN)
    async with LifespanManager(create_app(gateway)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            statuses = [
                (await client.post(PREDICT, json={"rows": rows}, headers=_bearer(TOKEN))).status_code,
                (await client.post(PREDICT, json=rows[1], headers=_bearer(TOKEN[:-1]))).status_code,
                (await client.post(PREDICT, json=broken, headers=_bearer(TOKEN))).status_code,
                (await client.post("/v1/admin/reload", headers=_bearer(TOKEN + "x"))).status_code,
                (await client.post("/v1/admin/reload", headers=_bearer(TOKEN))).status_code,
            ]
    assert statuses == [200, 401, 422, 401, 200]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert caplog.records  # something was logged at DEBUG, so the check below looked at text
    stored = _prediction_log_text(tmp_path / "predictions.db")
    assert len(stored.splitlines()) == 3
    for text in (logged, stored):
        assert TOKEN not in text
        assert TOKEN[:12] not in text
        for image in (row["image"] for row in [*rows, broken]):
            assert not _shares_a_stretch(image, text)
            assert base64.b64decode(image)[:16].hex() not in text


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _shares_a_stretch(secret: str, text: str, width: int = 24) -> bool:
    """Whether ``text`` holds a stretch of ``secret``: any run of 1.5 × ``width`` characters is caught."""
    return any(secret[i : i + width] in text for i in range(0, max(len(secret) - width, 0) + 1, width // 2))


def _prediction_log_text(path: Path) -> str:
    with sqlite3.connect(path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(
            json.dumps(row, default=str) for table in tables for row in db.execute(f'SELECT * FROM "{table}"')
        )
