"""A champion with a variant, over HTTP in process: shadow and canary as a client and an operator see them.

The cascade ``gwvariant`` is the session's packaged champion under a name of its own (so no
other test's gateway meets its variants); ``retrained`` is a candidate of other models,
fitted on other demo data, and ``twin`` the champion's own models under another threshold.
Each test attaches its variant through the admin endpoint and detaches it at the end.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from returns_data import DemoData

from skewguard.bentos.manifest import load_manifest, promote, save_manifest
from skewguard.bentos.variants import detach_variant
from skewguard.gateway.app import Gateway, create_app
from skewguard.gateway.features import StaticFeatureSource
from skewguard.gateway.predict import predict
from tests.gateway.conftest import VARIANT_CASCADE, make_gateway, request_row

pytestmark = pytest.mark.anyio

NAME = VARIANT_CASCADE
PREDICT = f"/v1/cascades/{NAME}/predict"
VARIANT = f"/v1/admin/cascades/{NAME}/variant"
TOKEN = "variant-test-token-7c1d"
AUTH = {"authorization": f"Bearer {TOKEN}"}
UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture
def champion(variant_champion: str) -> str:
    return variant_champion


@pytest.fixture
def twin(twin_candidate: str) -> str:
    return twin_candidate


@pytest.fixture
def retrained(retrained_candidate: str) -> str:
    return retrained_candidate


@pytest.fixture
def detached(champion: str) -> Iterator[None]:
    """Whatever a test attaches is detached afterwards, failed or not."""
    detach_variant(NAME)
    yield
    detach_variant(NAME)
    promote(champion)  # a test that promoted leaves the champion as it found it


async def _client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    from asgi_lifespan import LifespanManager

    async with LifespanManager(create_app(gateway), startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=AUTH) as client:
            client.gateway = gateway  # type: ignore[attr-defined]
            yield client


def _gateway(tmp_path: Path, online_rows: dict[int, dict[str, float | None]], **env: str) -> Gateway:
    """A gateway of ``gwvariant`` whose shadow runs every copy it can queue, however busy the
    gateway (in process, the test's own client keeps the loop busy): a test checks each copy."""
    values = {"SKEWGUARD_SHADOW_MAX_LOAD": "1", "SKEWGUARD_SHADOW_MAX_INFLIGHT": "0", **env}
    return make_gateway(
        tmp_path,
        StaticFeatureSource(online_rows),
        SKEWGUARD_CASCADES=NAME,
        SKEWGUARD_API_TOKEN=TOKEN,
        **values,
    )


@pytest.fixture
async def client(
    tmp_path: Path, detached: None, online_rows: dict[int, dict[str, float | None]]
) -> AsyncIterator[httpx.AsyncClient]:
    async for opened in _client(_gateway(tmp_path, online_rows)):
        yield opened


async def _attach(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.put(VARIANT, json=body)
    assert response.status_code == 200, response.text
    described: dict[str, Any] = response.json()
    return described


async def _send(
    client: httpx.AsyncClient, bodies: Sequence[Any], concurrency: int = 16
) -> list[dict[str, Any]]:
    """POST every body (``concurrency`` at a time); the JSON answers in order, each a 200."""
    answers: list[dict[str, Any]] = [{}] * len(bodies)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            response = await client.post(PREDICT, json=bodies[i])
        assert response.status_code == 200, response.text
        answers[i] = response.json()

    await asyncio.gather(*(one(i) for i in range(len(bodies))))
    return answers


async def _logged(client: httpx.AsyncClient, n: int) -> list[dict[str, Any]]:
    """The log's records once ``n`` are written (shadow copies are logged once they ran)."""
    log = client.gateway.log  # type: ignore[attr-defined]
    for _ in range(500):
        if await log.count() >= n:
            break
        await asyncio.sleep(0.02)
    records: list[dict[str, Any]] = await log.read()
    assert len(records) == n
    return records


async def _metric(client: httpx.AsyncClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = (await client.get("/metrics")).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _rows(demo: DemoData, n: int) -> list[dict[str, Any]]:
    return [request_row(demo, -1 - (i % 200)) for i in range(n)]


async def test_a_shadow_answers_nothing_and_the_log_keeps_its_answer_beside_the_champions(
    client: httpx.AsyncClient, demo: DemoData, champion: str, retrained: str
) -> None:
    described = await _attach(client, mode="shadow", version=retrained)
    assert described["variant"] | {"attached_at": None} == {
        "mode": "shadow",
        "version": retrained,
        "fraction": 1.0,
        "attached_at": None,
        "serving": True,
        "problem": None,
    }
    listed = (await client.get("/v1/cascades")).json()["cascades"]
    assert [(c["version"], c["variant"]["version"]) for c in listed] == [(champion, retrained)]
    rows = _rows(demo, 40)
    answers = await _send(client, rows)
    for answer in answers:
        [row] = answer["predictions"]
        assert (row["variant"], row["versions"]["cascade"]) == ("champion", champion)
    records = await _logged(client, 40)
    assert {r["request_id"] for r in records} == {a["request_id"] for a in answers}
    candidate = client.gateway.registry.served(NAME).variant.cascade  # type: ignore[attr-defined]
    options = client.gateway.options  # type: ignore[attr-defined]
    by_id = {a["request_id"]: (a, rows[i]) for i, a in enumerate(answers)}
    for record in records:
        shadow = record["candidate"]
        assert (record["variant"], shadow["variant"], shadow["version"]) == ("champion", "shadow", retrained)
        assert record["latency_ms"] > 0
        assert shadow["latency_ms"] > 0
        assert record["prediction"] == by_id[record["request_id"]][0]["predictions"][0]["prediction"]
        [own] = (await predict(candidate, by_id[record["request_id"]][1], options)).rows
        assert (shadow["prediction"], shadow["route"]) == (own["prediction"], own["route"])
        assert shadow["probabilities"] == pytest.approx(own["probabilities"])
        assert shadow["flags"] == own["skew_flags"]
    runs = await _metric(client, "skewguard_shadow_runs_total")
    assert runs[(("cascade", NAME), ("outcome", "ok"))] == 40


async def test_a_shadow_copies_about_its_fraction_of_the_requests(
    client: httpx.AsyncClient, demo: DemoData, retrained: str
) -> None:
    await _attach(client, mode="shadow", version=retrained, fraction=0.5)
    await _send(client, _rows(demo, 400))
    records = await _logged(client, 400)
    copied = sum(r["candidate"] is not None for r in records)
    assert 0.4 * 400 <= copied <= 0.6 * 400  # binomial: 200 ± 10 (1 sd)


async def test_under_overload_the_shadow_is_dropped_and_counted_and_every_champion_answer_logged(
    tmp_path: Path,
    detached: None,
    online_rows: dict[int, dict[str, float | None]],
    demo: DemoData,
    retrained: str,
) -> None:
    gateway = _gateway(tmp_path, online_rows, SKEWGUARD_SHADOW_QUEUE="1", SKEWGUARD_SHADOW_CONCURRENCY="1")
    async for client in _client(gateway):
        await _attach(client, mode="shadow", version=retrained)
        answers = await _send(client, _rows(demo, 120), concurrency=60)
        assert all(a["predictions"][0]["variant"] == "champion" for a in answers)
        records = await _logged(client, 120)
        outcomes = Counter("dropped" if r["candidate"].get("dropped") else "ran" for r in records)
        assert outcomes["dropped"] > 0, outcomes
        assert outcomes["ran"] > 0, outcomes
        dropped = await _metric(client, "skewguard_shadow_dropped_total")
        assert sum(dropped.values()) == outcomes["dropped"]
        assert {dict(labels)["reason"] for labels in dropped} <= {"queue_full", "waited_too_long"}


@pytest.mark.parametrize(
    "limit",
    [
        {"SKEWGUARD_SHADOW_MAX_LOAD": "0.01"},  # the event loop's thread busier than 1 % of the time
        {"SKEWGUARD_SHADOW_MAX_INFLIGHT": "1"},  # more than one champion request in flight
    ],
)
async def test_without_spare_capacity_the_shadow_gives_way(
    tmp_path: Path,
    detached: None,
    online_rows: dict[int, dict[str, float | None]],
    demo: DemoData,
    retrained: str,
    limit: dict[str, str],
) -> None:
    """A gateway busier than the shadow's limit drops the copies instead of running them."""
    gateway = _gateway(tmp_path, online_rows, **limit)
    async for client in _client(gateway):
        await _attach(client, mode="shadow", version=retrained)
        answers = await _send(client, _rows(demo, 300), concurrency=16)
        assert all(a["predictions"][0]["variant"] == "champion" for a in answers)
        records = await _logged(client, 300)
        assert all(r["candidate"] is not None for r in records)  # each one logged once, with or without
        dropped = await _metric(client, "skewguard_shadow_dropped_total")
        busy = dropped.get((("cascade", NAME), ("reason", "busy")), 0)
        assert busy > 0, dropped
        assert sum(1 for r in records if r["candidate"].get("dropped")) == sum(dropped.values())


async def test_a_failing_shadow_never_reaches_a_client_and_its_error_is_logged(
    tmp_path: Path,
    detached: None,
    online_rows: dict[int, dict[str, float | None]],
    demo: DemoData,
    retrained: str,
) -> None:
    router = load_manifest(retrained).router.tag  # type: ignore[union-attr]
    gateway = _gateway(tmp_path, online_rows, SKEWGUARD_REMOTE_MODELS=json.dumps({router: UNREACHABLE}))
    async for client in _client(gateway):
        await _attach(client, mode="shadow", version=retrained)
        answers = await _send(client, _rows(demo, 20), concurrency=1)
        assert all(a["predictions"][0]["variant"] == "champion" for a in answers)
        records = await _logged(client, 20)
        errors = {r["candidate"]["error"].partition(":")[0] for r in records}
        assert errors == {"upstream_unavailable"}
        runs = await _metric(client, "skewguard_shadow_runs_total")
        assert runs[(("cascade", NAME), ("outcome", "upstream_unavailable"))] == 20


async def test_a_canary_answers_its_share_of_5000_requests_within_3_points(
    client: httpx.AsyncClient, demo: DemoData, retrained: str
) -> None:
    await _attach(client, mode="canary", version=retrained, share=0.2)
    template = _rows(demo, 50)
    bodies = [template[i % 50] | {"customer_id": 1_000_000 + i} for i in range(5_000)]  # 5,000 entities
    answers = await _send(client, bodies)
    served = Counter(a["predictions"][0]["variant"] for a in answers)
    assert abs(served["canary"] / 5_000 - 0.2) <= 0.03, served
    for answer in answers:
        [row] = answer["predictions"]
        assert (row["variant"] == "canary") is (row["versions"]["cascade"] == retrained)


async def test_one_entity_always_sees_one_variant_also_within_one_request(
    client: httpx.AsyncClient, demo: DemoData, champion: str, retrained: str
) -> None:
    await _attach(client, mode="canary", version=retrained, share=0.5)
    template = _rows(demo, 50)
    entities = list(range(2_000_000, 2_000_300))
    bodies = [template[(e + k) % 50] | {"customer_id": e} for k in range(4) for e in entities]
    answers = await _send(client, bodies)
    seen: dict[int, set[str]] = {}
    for body, answer in zip(bodies, answers, strict=True):
        seen.setdefault(body["customer_id"], set()).add(answer["predictions"][0]["variant"])
    assert all(len(variants) == 1 for variants in seen.values())
    assert {v for variants in seen.values() for v in variants} == {"champion", "canary"}

    mixed = [template[i] | {"customer_id": e} for i, e in enumerate(entities[:12])]
    response = await client.post(PREDICT, json={"rows": mixed})
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [row["variant"] for row in rows] == [next(iter(seen[e])) for e in entities[:12]]
    versions = {row["variant"]: row["versions"]["cascade"] for row in rows}
    assert versions == {"champion": champion, "canary": retrained}
    records = await _logged(client, len(bodies) + 12)
    mine = sorted(
        (r for r in records if r["request_id"] == response.json()["request_id"]), key=lambda r: r["row"]
    )
    assert [r["row"] for r in mine] == list(range(12))
    assert [r["variant"] for r in mine] == [row["variant"] for row in rows]
    assert [r["fields"]["customer_id"] for r in mine] == entities[:12]


async def test_a_failing_canary_falls_back_to_the_champion_and_its_error_is_logged(
    tmp_path: Path,
    detached: None,
    online_rows: dict[int, dict[str, float | None]],
    demo: DemoData,
    champion: str,
    retrained: str,
) -> None:
    router = load_manifest(retrained).router.tag  # type: ignore[union-attr]
    gateway = _gateway(tmp_path, online_rows, SKEWGUARD_REMOTE_MODELS=json.dumps({router: UNREACHABLE}))
    async for client in _client(gateway):
        await _attach(client, mode="canary", version=retrained, share=0.5)
        template = _rows(demo, 40)
        bodies = [template[i] | {"customer_id": 3_000_000 + i} for i in range(40)]
        answers = await _send(client, bodies, concurrency=1)
        assert {a["predictions"][0]["versions"]["cascade"] for a in answers} == {champion}
        records = await _logged(client, 40)
        failed = [r for r in records if r["candidate"] is not None]
        assert failed, "no entity fell in the canary's half"
        assert all(r["candidate"]["error"].startswith("upstream_unavailable") for r in failed)
        fallbacks = await _metric(client, "skewguard_canary_fallbacks_total")
        assert fallbacks[(("cascade", NAME), ("code", "upstream_unavailable"))] == len(failed)


async def test_a_variant_that_does_not_load_never_stops_its_champion(
    client: httpx.AsyncClient, demo: DemoData, champion: str
) -> None:
    current = load_manifest(champion)
    branches = current.branches | {"reseller": "nowhere:v1"}
    broken = save_manifest(
        current.model_copy(update={"branches": branches, "tag": None, "status": "candidate"})
    )
    described = await _attach(client, mode="shadow", version=broken)
    assert described["variant"]["serving"] is False
    assert "nowhere:v1" in described["variant"]["problem"]
    answers = await _send(client, _rows(demo, 5))
    assert all(a["predictions"][0]["versions"]["cascade"] == champion for a in answers)


async def test_the_admin_endpoint_attaches_detaches_and_refuses_what_it_cannot_do(
    client: httpx.AsyncClient, retrained: str, twin: str
) -> None:
    wrong = await client.put(
        VARIANT, json={"mode": "shadow", "version": twin}, headers={"authorization": "Bearer x"}
    )
    assert wrong.status_code == 401
    refusals = {
        "mode": {"mode": "blue", "version": twin},
        "share": {"mode": "canary", "version": twin},
        "fraction": {"mode": "canary", "version": twin, "fraction": 0.1},
    }
    for field, body in refusals.items():
        response = await client.put(VARIANT, json=body)
        assert (response.status_code, response.json()["field"]) == (422, field), response.text
    too_much = await client.put(VARIANT, json={"mode": "canary", "version": twin, "share": 1.0})
    assert (too_much.status_code, too_much.json()["field"]) == (422, "share")
    unknown = await client.put(VARIANT, json={"mode": "shadow", "version": f"cascade-{NAME}:nosuchversion"})
    assert unknown.status_code == 404
    elsewhere = await client.put(
        "/v1/admin/cascades/nosuchcascade/variant", json={"mode": "shadow", "version": twin}
    )
    assert elsewhere.status_code == 404
    assert (await _attach(client, mode="canary", version=twin, share=0.3))["variant"]["share"] == 0.3
    await client.post("/v1/admin/reload")  # survives a reload: it lives in the alias
    listed = (await client.get("/v1/cascades")).json()["cascades"]
    assert listed[0]["variant"]["version"] == twin
    detached = await client.delete(VARIANT)
    assert (detached.status_code, detached.json()["variant"]) == (200, None)


async def test_admin_is_closed_without_a_token(
    tmp_path: Path, detached: None, online_rows: dict[int, dict[str, float | None]], twin: str
) -> None:
    gateway = make_gateway(tmp_path, StaticFeatureSource(online_rows), SKEWGUARD_CASCADES=NAME)
    async for client in _client(gateway):
        response = await client.put(VARIANT, json={"mode": "shadow", "version": twin})
        assert response.status_code == 403


async def test_a_promotion_replaces_champion_and_variant_at_once(
    client: httpx.AsyncClient, demo: DemoData, retrained: str
) -> None:
    await _attach(client, mode="shadow", version=retrained)
    promote(retrained)
    await client.post("/v1/admin/reload")
    [listed] = (await client.get("/v1/cascades")).json()["cascades"]
    assert (listed["version"], listed["variant"]) == (retrained, None)
    answers = await _send(client, _rows(demo, 5))
    assert {a["predictions"][0]["versions"]["cascade"] for a in answers} == {retrained}
