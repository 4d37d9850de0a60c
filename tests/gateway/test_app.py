"""The gateway over HTTP (in-process ASGI): predict, list, health, metrics, errors, auth."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from skewguard.gateway.app import create_app
from skewguard.gateway.features import StaticFeatureSource
from tests.gateway.conftest import CASCADE, make_gateway, request_row

pytestmark = pytest.mark.anyio
PREDICT = f"/v1/cascades/{CASCADE}/predict"


async def test_predict_one_row_answers_with_route_versions_features_and_flags(
    gateway_client: Any, demo: Any, champion_tag: str
) -> None:
    response = await gateway_client.post(PREDICT, json=request_row(demo))
    assert response.status_code == 200, response.text
    [row] = response.json()["predictions"]
    assert row["route"] in {"reseller", "retail"}
    assert set(row["probabilities"]) == {"0", "1"}
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-6
    assert row["versions"]["cascade"] == champion_tag
    assert row["versions"]["router"].startswith(f"{CASCADE}-router:")
    assert set(row["features"]) == {"orders_30d", "return_rate_90d", "account_age_days"}
    assert row["defaults_used"] is False
    assert isinstance(row["skew_flags"], list)


async def test_batch_rows_take_both_routes_and_unknown_entity_uses_defaults(
    gateway_client: Any, demo: Any
) -> None:
    rows = [request_row(demo, i) for i in range(-40, 0)]
    rows[0]["customer_id"] = 999_999_999
    response = await gateway_client.post(PREDICT, json={"rows": rows})
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert len(answers) == 40
    assert answers[0]["defaults_used"] is True
    assert {f["kind"] for f in answers[0]["skew_flags"]} >= {"missing_online_feature"}
    assert all(not a["defaults_used"] for a in answers[1:])


async def test_skew_flags_for_unseen_category_and_range(gateway_client: Any, demo: Any) -> None:
    row = request_row(demo) | {"category": "drones", "price": 9e9}
    response = await gateway_client.post(PREDICT, json=row)
    kinds = {f["kind"]: f["field"] for f in response.json()["predictions"][0]["skew_flags"]}
    assert kinds["unseen_category"] == "category"
    assert kinds["out_of_range"] == "price"
    metrics = (await gateway_client.get("/metrics")).text
    assert 'skewguard_skew_flags_total{cascade="gwtest",kind="unseen_category"}' in metrics
    assert "skewguard_request_seconds_bucket" in metrics


async def test_the_prediction_log_shows_as_counters_and_a_queued_gauge(gateway_client: Any) -> None:
    metrics = (await gateway_client.get("/metrics")).text.splitlines()
    assert "# TYPE skewguard_prediction_log_dropped_total counter" in metrics
    assert "skewguard_prediction_log_dropped_total 0.0" in metrics
    for counter in ("written", "write_errors", "pruned"):
        assert f"# TYPE skewguard_prediction_log_{counter}_total counter" in metrics
    assert "# TYPE skewguard_prediction_log_queued gauge" in metrics


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"rows": [', 422, "body"),
        (b'{"rows": 3}', 422, "rows"),
        (b'{"rows": [], "x": 1}', 422, "x"),
        (b"[1, 2]", 422, "body"),
        (b'\xff\xfe{"a"', 422, "body"),
    ],
)
async def test_malformed_bodies_are_4xx_naming_the_field(
    gateway_client: Any, body: bytes, status: int, field: str
) -> None:
    response = await gateway_client.post(PREDICT, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price": "cheap"}, "price"),
        ({"price": float("nan")}, "price"),
        ({"orders_30d": 3}, "orders_30d"),
        ({"colour": "red"}, "colour"),
        ({"customer_id": "abc"}, "customer_id"),
        ({"image": "bm90IGFuIGltYWdl"}, "image"),
        ({"description": "x" * 20_000}, "description"),
    ],
)
async def test_bad_fields_are_4xx_naming_the_field(
    gateway_client: Any, demo: Any, change: dict[str, Any], field: str
) -> None:
    row = request_row(demo) | change
    body = json.dumps(row)  # NaN as JSON's non-standard literal, as careless clients send it
    response = await gateway_client.post(PREDICT, content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.json()["field"] == field
    again = await gateway_client.post(PREDICT, json=request_row(demo))
    assert again.status_code == 200


async def test_missing_field_unknown_cascade_and_route(gateway_client: Any, demo: Any) -> None:
    row = request_row(demo)
    del row["price"]
    missing = await gateway_client.post(PREDICT, json=row)
    assert (missing.status_code, missing.json()["field"]) == (422, "price")
    unknown = await gateway_client.post("/v1/cascades/nope/predict", json=request_row(demo))
    assert (unknown.status_code, unknown.json()["code"]) == (404, "model_not_found")
    nowhere = await gateway_client.get("/nowhere")
    assert (nowhere.status_code, nowhere.json()["code"]) == (404, "not_found")


async def test_predict_path_edges_answer_as_the_route_table_says(gateway_client: Any, demo: Any) -> None:
    """The predict fast path takes only what the route matches; the rest stays Starlette's."""
    wrong_method = await gateway_client.get(PREDICT)
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")
    nested = await gateway_client.post("/v1/cascades/a/b/predict", json=request_row(demo))
    assert (nested.status_code, nested.json()["code"]) == (404, "not_found")
    nameless = await gateway_client.post("/v1/cascades//predict", json=request_row(demo))
    assert (nameless.status_code, nameless.json()["code"]) == (404, "not_found")


async def test_an_unexpected_error_in_predict_is_a_logged_json_500(
    gateway_client: Any, demo: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import skewguard.gateway.app as gateway_app

    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the request path")

    monkeypatch.setattr(gateway_app, "predict", broken)
    with caplog.at_level(logging.ERROR, logger="skewguard.gateway"):
        response = await gateway_client.post(PREDICT, json=request_row(demo))
    assert response.status_code == 500
    assert response.json() == {
        "code": "internal_error",
        "message": "An unexpected error; see the gateway log.",
    }
    assert any(r.exc_info and "a bug in the request path" in str(r.exc_info[1]) for r in caplog.records)
    assert (await gateway_client.post(PREDICT, json=request_row(demo))).status_code == 500  # still serving


async def test_listing_health_readiness_and_openapi(gateway_client: Any, champion_tag: str) -> None:
    listed = (await gateway_client.get("/v1/cascades")).json()["cascades"]
    assert [(c["name"], c["version"], c["status"]) for c in listed] == [(CASCADE, champion_tag, "champion")]
    assert (await gateway_client.get("/healthz")).json() == {"status": "ok"}
    ready = await gateway_client.get("/readyz")
    assert ready.status_code == 200
    document = (await gateway_client.get("/openapi.json")).json()
    row = document["components"]["schemas"][f"{CASCADE}_row"]
    assert "customer_id" in row["required"]
    assert "orders_30d" not in row["properties"]
    docs = await gateway_client.get("/docs")
    assert "swagger-ui" in docs.text
    assert (await gateway_client.get("/docs/assets/swagger-ui-bundle.js")).status_code == 200


async def test_feature_store_down_degrades_or_rejects(tmp_path: Path, champion_tag: str, demo: Any) -> None:
    import httpx
    from asgi_lifespan import LifespanManager

    for mode, expected in (("degrade", 200), ("reject", 503)):
        source = StaticFeatureSource({}, available=False)
        gateway = make_gateway(tmp_path / mode, source, SKEWGUARD_ON_FEATURE_STORE_ERROR=mode)
        async with LifespanManager(create_app(gateway)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                response = await client.post(PREDICT, json=request_row(demo))
                ready = await client.get("/readyz")
        assert response.status_code == expected, response.text
        assert ready.status_code == 503
        if mode == "degrade":
            [row] = response.json()["predictions"]
            assert row["defaults_used"] is True
            assert "feature_store_unavailable" in {f["kind"] for f in row["skew_flags"]}


async def test_bearer_token_guards_predict_and_admin(tmp_path: Path, champion_tag: str, demo: Any) -> None:
    import httpx
    from asgi_lifespan import LifespanManager

    source = StaticFeatureSource({})
    gateway = make_gateway(tmp_path, source, SKEWGUARD_API_TOKEN="s3cret")
    async with LifespanManager(create_app(gateway)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            denied = await client.post(PREDICT, json=request_row(demo))
            admin = await client.post("/v1/admin/reload")
            allowed = await client.post("/v1/admin/reload", headers={"authorization": "Bearer s3cret"})
    assert denied.status_code == 401
    assert admin.status_code == 401
    assert "s3cret" not in denied.text
    assert allowed.status_code == 200
    assert allowed.json()["reloaded"] == [champion_tag]


async def test_readyz_names_a_remote_model_that_is_down_and_a_reload_retires_its_probe(
    tmp_path: Path, champion_tag: str, demo: Any
) -> None:
    import asyncio
    import socket

    import httpx
    from asgi_lifespan import LifespanManager

    from skewguard.bentos.manifest import load_manifest

    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        down_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    router = load_manifest(champion_tag).router.tag
    remote = json.dumps({router.partition(":")[0]: down_url})
    gateway = make_gateway(
        tmp_path, StaticFeatureSource({}), SKEWGUARD_REMOTE_MODELS=remote, SKEWGUARD_API_TOKEN="s3cret"
    )
    bearer = {"authorization": "Bearer s3cret"}  # admin is closed without a token

    def probes() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == f"probe {down_url}/readyz" and not t.done()]

    async with LifespanManager(create_app(gateway)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=bearer) as client:
            before_any_request = await client.get("/readyz")
            answer = await client.post(PREDICT, json=request_row(demo))
            [old_probe] = probes()
            assert (await client.post("/v1/admin/reload")).status_code == 200
            await asyncio.sleep(0)
            retired = old_probe.cancelled() or old_probe.done()
            after_reload = await client.get("/readyz")  # the new version finds it down too
            still_probing = len(probes())

    assert before_any_request.status_code == 503
    [problem] = before_any_request.json()["problems"]
    assert router in problem
    assert down_url in problem
    assert "unreachable" in problem
    assert answer.status_code == 503
    assert answer.json()["code"] == "upstream_unavailable"
    assert retired
    assert after_reload.status_code == 503
    assert still_probing == 1  # the new version's, not the replaced one's as well


async def test_a_feature_older_than_its_ttl_is_served_as_training_sees_it_and_flagged(
    tmp_path: Path, demo: Any, champion_tag: str, online_rows: dict[int, dict[str, float | None]]
) -> None:
    """Feast answers old values as fresh; the gateway dates them against the row's own event time."""
    import pandas as pd
    from asgi_lifespan import LifespanManager
    from httpx import ASGITransport, AsyncClient

    row = request_row(demo)
    key = row["customer_id"]
    ordered = pd.Timestamp(row["order_ts"]).timestamp()
    old, recent = {key: ordered - 31 * 86_400}, {key: ordered - 29 * 86_400}  # the TTL is 30 days
    answers = []
    for stamps in (old, recent):
        gateway = make_gateway(tmp_path, StaticFeatureSource(online_rows, event_times=stamps))
        async with LifespanManager(create_app(gateway)) as manager:
            client = AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://gw")
            response = await client.post(PREDICT, json=row)
            assert response.status_code == 200, response.text
            answers.append(response.json()["predictions"][0])
    stale, fresh = answers
    flags = [f for f in stale["skew_flags"] if f["kind"] == "stale_feature"]
    assert sorted(f["field"] for f in flags) == ["account_age_days", "orders_30d", "return_rate_90d"]
    assert "31.0 days old" in flags[0]["detail"]
    assert stale["defaults_used"] is True
    assert not [f for f in stale["skew_flags"] if f["kind"] == "missing_online_feature"]  # one flag each
    spec = gateway.registry.get(CASCADE).spec
    assert stale["features"] == {f.name: f.default for f in spec.online_features}  # training's missing value
    assert not [f for f in fresh["skew_flags"] if f["kind"] == "stale_feature"]
    assert fresh["features"] == online_rows[key]
