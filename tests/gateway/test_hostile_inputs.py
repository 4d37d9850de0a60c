"""Inputs a careful client never sends, answered as the table says: never a 500, never a stalled loop.

| input                                                  | answer                                          |
|--------------------------------------------------------|-------------------------------------------------|
| a field value or a whole body nested 1,000+ levels     | 422 naming the field, or ``body``               |
| a 400-digit integer in a numeric field                 | 422 naming the field: out of range              |
| a lone-surrogate object key, in a row or beside rows   | 422 naming it (escaped) as an unexpected field  |
| 100 (or 1,000) rows of 2000×2000 bilevel PNGs          | 413 naming ``image``, before any pixel decoded  |
| images within the budget but big                       | decoded in the decoding thread, not the loop    |
| decoding that outlasts the request budget              | 503 ``request_budget_exceeded``, not upstream   |
| ``POST /v1/admin/reload`` without SKEWGUARD_API_TOKEN  | 403 naming the setting                          |
| ``Authorization: Bearer <token> `` (trailing space)    | accepted: HTTP trims a header's ends            |
| a 1 MB request header                                  | 431 (SKEWGUARD_MAX_HEADER_BYTES)                |
| connections that sent half a request line              | 408 and closed (SKEWGUARD_HEADER_TIMEOUT_SECONDS) |
| a 500 or any error answer                              | counted in /metrics by code and status          |
| a client that disconnects mid-body                     | one INFO line, counted as ``client_disconnected`` |
| an unexpected field                                    | 422 listing only the fields a client sends      |
| a burst of 2,000 requests at c=64, half of them bad    | 0 × 500; every answer the expected code          |

The first rows run in-process (ASGI); the server's limits and the burst against a real
``skewguard serve`` process (``integration``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from returns_data import DemoData

from bench.hostile_burst import (
    DEEP,
    HUGE,
    hostile_requests,
    mixed,
    png_bilevel,
    run_burst,
    valid_requests,
)
from skewguard.bentos.images import OpenedImage
from skewguard.gateway.app import create_app
from skewguard.gateway.features import StaticFeatureSource
from tests.gateway.conftest import CASCADE, make_gateway, request_row
from tests.gateway.test_server import (
    gateway,
    home,  # noqa: F401 - the module-scoped fixture of a home with Feast applied
    running,
)

pytestmark = pytest.mark.anyio
PREDICT = f"/v1/cascades/{CASCADE}/predict"
TOKEN = "tok-0c1d2e3f4a5b6c7d8e9f"
ONLINE = ("orders_30d", "return_rate_90d", "account_age_days")


def _raw(row: dict[str, Any], name: str, text: str) -> bytes:
    marker = "__raw__"
    return json.dumps(row | {name: marker}).replace(f'"{marker}"', text).encode()


def _raw_rows(row: dict[str, Any], name: str, text: str) -> bytes:
    marker = "__raw__"
    return json.dumps({"rows": [row, row | {name: marker}]}).replace(f'"{marker}"', text).encode()


def _deep(levels: int, kind: str = "list") -> str:
    return "[" * levels + "1" + "]" * levels if kind == "list" else '{"a": ' * levels + "1" + "}" * levels


async def _post(client: httpx.AsyncClient, body: bytes, **headers: str) -> httpx.Response:
    return await client.post(PREDICT, content=body, headers={"content-type": "application/json", **headers})


NESTED = {
    "a list 1,000 deep in a field": (lambda row: _raw(row, "price", _deep(1_000)), "price"),
    "an object 1,000 deep in a field": (lambda row: _raw(row, "price", _deep(1_000, "object")), "price"),
    "a list 5,000 deep in a field": (lambda row: _raw(row, "price", _deep(5_000)), "body"),
    "a field 1,000 deep in rows": (lambda row: _raw_rows(row, "price", _deep(1_000)), "price"),
    "a body 1,000 deep": (lambda row: _deep(1_000).encode(), "body"),
    "a body of objects 1,000 deep": (lambda row: _deep(1_000, "object").encode(), "a"),  # one row, field a
    "a body 100,000 deep": (lambda row: _deep(100_000).encode(), "body"),
    "rows 1,000 deep": (lambda row: f'{{"rows": {_deep(1_000)}}}'.encode(), "rows"),
}


@pytest.mark.parametrize("case", list(NESTED))
async def test_deep_nesting_is_a_422_naming_the_field_or_the_body(
    gateway_client: Any, demo: DemoData, case: str
) -> None:
    body, field = NESTED[case]
    response = await _post(gateway_client, body(request_row(demo)))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert field in response.json()["message"] or field == "body"


@pytest.mark.parametrize("field", ["price", "quantity", "order_ts"])
@pytest.mark.parametrize("number", [HUGE, f"-{HUGE}", "1e400", f"{HUGE}.5"])
async def test_a_number_beyond_float64_is_a_422_naming_the_field_out_of_range(
    gateway_client: Any, demo: DemoData, field: str, number: str
) -> None:
    response = await _post(gateway_client, _raw(request_row(demo), field, number))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert "out of range" in response.json()["message"]


async def test_big_but_float64_numbers_are_served_or_refused_by_their_field(
    gateway_client: Any, demo: DemoData
) -> None:
    """Up to ±1.8e308 a number is a number: served (flagged out of range), or the field's own limit."""
    price = await _post(gateway_client, _raw(request_row(demo), "price", "7" * 300))
    assert price.status_code == 200, price.text
    kinds = {(f["kind"], f["field"]) for f in price.json()["predictions"][0]["skew_flags"]}
    assert ("out_of_range", "price") in kinds
    when = await _post(gateway_client, _raw(request_row(demo), "order_ts", "7" * 300))
    assert (when.status_code, when.json()["field"]) == (422, "order_ts")  # past epoch seconds' ±2**53
    key = await _post(gateway_client, _raw(request_row(demo), "customer_id", "7" * 40))
    assert (key.status_code, key.json()["field"]) == (422, "customer_id")


@pytest.mark.parametrize(
    "body",
    [
        lambda row: json.dumps(row | {"\ud800": 1}).encode(),
        lambda row: json.dumps({"rows": [row | {"\udfff": 1}]}).encode(),
        lambda row: json.dumps({"rows": [row], "\ud800": 1}).encode(),
        lambda row: json.dumps(row | {"a\ud800b": 1}).encode(),
    ],
    ids=["in a row", "in a batch's row", "beside rows", "inside a key"],
)
async def test_a_lone_surrogate_key_is_a_422_naming_it_as_an_unexpected_field(
    gateway_client: Any, demo: DemoData, body: Callable[[dict[str, Any]], bytes]
) -> None:
    response = await _post(gateway_client, body(request_row(demo)))
    assert response.status_code == 422, response.text
    answer = response.json()
    assert "\\ud" in answer["field"]  # named as the client escaped it
    assert answer["field"] in answer["message"].replace("\\\\", "\\")
    assert "nexpected" in answer["message"]


async def test_an_unexpected_field_lists_only_what_a_client_sends(
    gateway_client: Any, demo: DemoData
) -> None:
    response = await _post(gateway_client, json.dumps(request_row(demo) | {"colour": "red"}).encode())
    assert (response.status_code, response.json()["field"]) == (422, "colour")
    message = response.json()["message"]
    listed = set(message.split("send only ", 1)[1].rstrip(".").split(", "))
    assert listed == set(request_row(demo))  # the request fields and the entity key
    assert not any(feature in message for feature in ONLINE)


@pytest.mark.parametrize("rows", [100, 1_000])
async def test_many_big_images_are_a_413_naming_the_image_before_any_pixel_is_decoded(
    gateway_client: Any, demo: DemoData, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    decoded: list[int] = []
    original = OpenedImage.decode
    monkeypatch.setattr(OpenedImage, "decode", lambda self: decoded.append(1) or original(self))
    image = base64.b64encode(png_bilevel(2_000)).decode()
    body = json.dumps({"rows": [request_row(demo) | {"image": image}] * rows}).encode()
    assert len(body) < 1_000_000  # small on the wire
    response = await _post(gateway_client, body)
    assert response.status_code == 413, response.text
    assert response.json()["field"] == "image"
    assert "SKEWGUARD_MAX_REQUEST_PIXELS" in response.json()["message"]
    assert decoded == []
    assert (await gateway_client.post(PREDICT, json=request_row(demo))).status_code == 200


async def test_big_images_within_the_budget_are_decoded_off_the_event_loop(
    gateway_client: Any, demo: DemoData, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    original = OpenedImage.decode
    monkeypatch.setattr(
        OpenedImage, "decode", lambda self: threads.append(threading.current_thread().name) or original(self)
    )
    big = base64.b64encode(png_bilevel(1_000)).decode()
    response = await gateway_client.post(PREDICT, json={"rows": [request_row(demo) | {"image": big}] * 2})
    assert response.status_code == 200, response.text
    small = await gateway_client.post(PREDICT, json=request_row(demo))  # 32×32: on the loop, no hop
    assert small.status_code == 200
    assert len(threads) == 3
    assert all(name.startswith("skewguard-decode") for name in threads[:2])
    assert threads[2] == threading.main_thread().name


async def test_decoding_past_the_request_budget_is_a_503_saying_what_ran_out(
    tmp_path: Path, champion_tag: str, demo: DemoData, online_rows: dict[int, dict[str, float | None]]
) -> None:
    gateway = make_gateway(tmp_path, StaticFeatureSource(online_rows), SKEWGUARD_REQUEST_BUDGET_MS="0.001")
    big = base64.b64encode(png_bilevel(1_500)).decode()
    async with _client(gateway) as client:
        response = await client.post(PREDICT, json={"rows": [request_row(demo) | {"image": big}] * 2})
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "request_budget_exceeded"
    assert response.json()["field"] == "image"
    assert "SKEWGUARD_REQUEST_BUDGET_MS" in response.json()["message"]
    assert 'skewguard_errors_total{code="request_budget_exceeded",status="503"} 1.0' in metrics


async def test_admin_is_closed_without_a_token_and_says_which_setting_opens_it(gateway_client: Any) -> None:
    response = await gateway_client.post("/v1/admin/reload")
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "admin_disabled"
    assert "SKEWGUARD_API_TOKEN" in response.json()["message"]


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (f"Bearer {TOKEN}", 200),
        (f"Bearer {TOKEN} ", 200),  # HTTP trims a header value's ends: the server never sees the space
        (f"Bearer {TOKEN}\t", 200),
        (f"Bearer  {TOKEN}", 401),
        (f"bearer {TOKEN}", 401),
        (f"Bearer {TOKEN[:-1]}", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Bearer {TOKEN} x", 401),
        (TOKEN, 401),
        ("", 401),
    ],
)
async def test_the_token_is_compared_exactly_but_for_the_ends_http_trims(
    tmp_path: Path, champion_tag: str, header: str, status: int
) -> None:
    gateway = make_gateway(tmp_path, StaticFeatureSource({}), SKEWGUARD_API_TOKEN=TOKEN)
    async with _client(gateway) as client:
        response = await client.post("/v1/admin/reload", headers={"authorization": header} if header else {})
    assert response.status_code == status, response.text


async def test_every_error_answer_is_counted_by_code_and_status_a_500_too(
    gateway_client: Any, demo: DemoData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import skewguard.gateway.app as gateway_app

    await _post(gateway_client, _raw(request_row(demo), "price", HUGE))
    await gateway_client.post("/v1/admin/reload")

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the request path")

    monkeypatch.setattr(gateway_app, "answer", broken)
    for _ in range(3):
        assert (await gateway_client.post(PREDICT, json=request_row(demo))).status_code == 500
    metrics = (await gateway_client.get("/metrics")).text
    assert 'skewguard_errors_total{code="internal_error",status="500"} 3.0' in metrics
    assert 'skewguard_errors_total{code="invalid_input",status="422"} 1.0' in metrics
    assert 'skewguard_errors_total{code="admin_disabled",status="403"} 1.0' in metrics


async def test_a_client_leaving_mid_body_is_one_counted_info_line(
    gateway_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = gateway_client.gateway  # the Gateway; its app is driven directly, as a server would
    caplog.set_level(logging.DEBUG)
    sent: list[dict[str, Any]] = []
    await _disconnect_mid_body(create_app(app), sent)
    metrics = app.metrics.render().decode()
    ours = [r for r in caplog.records if r.name == "skewguard.gateway"]
    assert [(r.levelno, r.exc_info) for r in ours] == [(logging.INFO, None)]
    assert "disconnected after 10 of 200 bytes" in ours[0].getMessage()
    assert 'skewguard_errors_total{code="client_disconnected",status="499"} 1.0' in metrics


async def _disconnect_mid_body(app: Any, sent: list[dict[str, Any]]) -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": PREDICT,
        "raw_path": PREDICT.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"200")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("gw", 80),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
    }
    events = iter([{"type": "http.request", "body": b'{"rows": [', "more_body": True}])

    async def receive() -> dict[str, Any]:
        return next(events, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)


class _Client:
    """An in-process client of a gateway app with its lifespan."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    async def __aenter__(self) -> httpx.AsyncClient:
        self._lifespan = LifespanManager(create_app(self.gateway))
        manager = await self._lifespan.__aenter__()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://gw")
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._lifespan.__aexit__(*exc)


def _client(gateway: Any) -> _Client:
    return _Client(gateway)


# --- the server's limits and the burst: a real `skewguard serve` process -------------------------


def _exchange(url: str, data: bytes, *, read_timeout: float = 30.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before all was sent
            sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65_536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.integration
@pytest.mark.slow
async def test_the_server_limits_the_head_in_size_and_time_and_trims_the_token(
    home: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    demo: DemoData,
) -> None:
    server = gateway(
        home,
        tmp_path,
        SKEWGUARD_API_TOKEN=TOKEN,
        SKEWGUARD_HEADER_TIMEOUT_SECONDS="1",
        SKEWGUARD_MAX_HEADER_BYTES="16384",
    )
    body = json.dumps(request_row(demo)).encode()
    head = f"POST {PREDICT} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
    head += f"content-length: {len(body)}\r\n"
    with running(server):
        big = await asyncio.to_thread(
            _exchange, server.url, head.encode() + b"x-padding: " + b"a" * 1_000_000 + b"\r\n\r\n" + body
        )
        just_under = (
            f"authorization: Bearer {TOKEN}\r\nx-padding: {'a' * 15_000}\r\nconnection: close\r\n\r\n"
        )
        fits = await asyncio.to_thread(_exchange, server.url, head.encode() + just_under.encode() + body)
        halves = await asyncio.gather(
            *(asyncio.to_thread(_exchange, server.url, f"POST {PREDICT[:9]}".encode()) for _ in range(50))
        )
        silent = await asyncio.to_thread(_exchange, server.url, b"")
        authorized = head + f"authorization: Bearer {TOKEN}\r\n\r\n"
        kept = authorized.encode() + body + f"POST {PREDICT[:9]}".encode()  # then half a second head
        kept_alive = await asyncio.to_thread(_exchange, server.url, kept)
        trailing = f"authorization: Bearer {TOKEN} \r\nconnection: close\r\n\r\n"
        trimmed = await asyncio.to_thread(_exchange, server.url, head.encode() + trailing.encode() + body)
        async with httpx.AsyncClient(base_url=server.url) as client:
            after = await client.post(
                PREDICT, json=request_row(demo), headers={"authorization": f"Bearer {TOKEN}"}
            )
    assert big.startswith(b"HTTP/1.1 431 "), big[:200]
    assert fits.startswith(b"HTTP/1.1 200 "), fits[:300]
    assert {h[:13] for h in halves} == {b"HTTP/1.1 408 "}
    assert silent.startswith(b"HTTP/1.1 408 ")
    assert kept_alive.startswith(b"HTTP/1.1 200 "), kept_alive[:300]  # the first request answered,
    assert kept_alive.count(b"HTTP/1.1 408 ") == 1, kept_alive[-300:]  # the second's head timed out
    assert trimmed.startswith(b"HTTP/1.1 200 "), trimmed[:300]
    assert after.status_code == 200
    log = server.tail(50_000)
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


@pytest.mark.integration
@pytest.mark.slow
async def test_the_pre_forked_workers_limit_the_head_as_one_process_does(
    home: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    server = gateway(home, tmp_path, SKEWGUARD_WORKERS="2", SKEWGUARD_HEADER_TIMEOUT_SECONDS="1")
    with running(server):
        big = await asyncio.to_thread(
            _exchange, server.url, b"GET /healthz HTTP/1.1\r\nx-padding: " + b"a" * 1_000_000 + b"\r\n\r\n"
        )
        half = await asyncio.to_thread(_exchange, server.url, b"GET /heal")
    assert big.startswith(b"HTTP/1.1 431 "), big[:200]
    assert half.startswith(b"HTTP/1.1 408 "), half[:200]


@pytest.mark.integration
@pytest.mark.slow
async def test_a_burst_of_2000_half_of_them_hostile_answers_no_500_and_every_code_as_expected(
    home: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    demo: DemoData,
) -> None:
    server = gateway(home, tmp_path, SKEWGUARD_HEADER_TIMEOUT_SECONDS="1")
    valid = valid_requests([request_row(demo, i) for i in range(-64, 0)])
    hostile = hostile_requests(request_row(demo), PREDICT)
    requests = mixed(valid, hostile, 2_000)
    with running(server):
        burst = await run_burst(server.url, requests, 64, PREDICT)
        async with httpx.AsyncClient(base_url=server.url) as client:
            metrics = (await client.get("/metrics")).text
    answers = burst.answers
    print(f"\n{len(answers)} answers: {sorted(burst.statuses().items(), key=str)}")
    assert len(answers) == 2_000
    assert {a.name for a in answers} == {"valid"} | {h.name for h in hostile}  # every row of the table
    assert [a for a in answers if (a.status or 0) >= 500] == []
    assert burst.unexpected() == []
    cut_off = sum(1 for a in answers if a.name == "body cut off")
    assert f'skewguard_errors_total{{code="client_disconnected",status="499"}} {cut_off:.1f}' in metrics
    assert "internal_error" not in metrics
    log = server.tail(200_000)
    assert "Traceback" not in log, log[-3000:]
    assert "ERROR" not in log, log[-3000:]
    assert DEEP > 1_024  # the deep bodies went past orjson's own limit, to the second parser


FINDINGS = Path(__file__).parents[1] / "fuzz" / "findings" / "image"


@pytest.mark.parametrize("finding", sorted(FINDINGS.iterdir()), ids=lambda p: p.name)
async def test_images_the_fuzzer_found_are_a_4xx_naming_the_image(
    gateway_client: Any, demo: DemoData, finding: Path
) -> None:
    image = base64.b64encode(finding.read_bytes()).decode()
    response = await gateway_client.post(PREDICT, json=request_row(demo) | {"image": image})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "image"
