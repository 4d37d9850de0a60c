"""The catalogue of bad input: one request per class, each answered 4xx naming the field.

Classes: malformed JSON, wrong type, missing field, extra field, NaN/Infinity, huge
string, oversize body, non-image bytes, truncated image, decompression bomb, non-UTF-8
text, unknown cascade. Each answer is ``{"code", "message", "field"}`` whose message names
the field, and a good request right after it is answered 200: bad input never costs the
gateway its service.

Two classes are not errors, by design, and are tested for what the product does instead:
mixed-script text is text (served, flagged ``out_of_vocabulary`` — or refused when the
operator lists that flag in ``SKEWGUARD_GUARD_REJECT``), and an unknown entity is served
with the training profile's defaults and a ``missing_online_feature`` flag per feature.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from returns_data import DemoData

from skewguard.gateway.app import create_app
from skewguard.gateway.features import StaticFeatureSource
from tests.gateway.conftest import CASCADE, make_gateway, request_row

pytestmark = pytest.mark.anyio
PREDICT = f"/v1/cascades/{CASCADE}/predict"
MIXED_SCRIPT = "Кружка マグカップ كوب 🙂 ΚΟΥΠΑ"
"""A review in Cyrillic, Katakana, Arabic, an emoji and Greek: not one ASCII word."""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb(side: int = 20_000) -> bytes:
    """A complete, valid 1-bit PNG of side² black pixels: ~50 KB that decode to 400 megapixels."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@dataclass(frozen=True, slots=True)
class Case:
    """One bad request: the body bytes (from a good row), where it goes, and the answer expected."""

    body: Callable[[dict[str, Any]], bytes]
    status: int
    field: str
    path: str = PREDICT


def _with(**change: Any) -> Callable[[dict[str, Any]], bytes]:
    # ``json.dumps``, not httpx's encoder: it writes NaN/Infinity and \ud800 escapes as careless clients do
    return lambda row: json.dumps(row | change).encode()


def _without(name: str) -> Callable[[dict[str, Any]], bytes]:
    return lambda row: json.dumps({k: v for k, v in row.items() if k != name}).encode()


def _image(transform: Callable[[bytes], bytes]) -> Callable[[dict[str, Any]], bytes]:
    def body(row: dict[str, Any]) -> bytes:
        data = transform(base64.b64decode(row["image"]))
        return json.dumps(row | {"image": base64.b64encode(data).decode()}).encode()

    return body


def _non_utf8(row: dict[str, Any]) -> bytes:
    """Latin-1 bytes where UTF-8 belongs: the body cannot be decoded, so the body is the field."""
    return json.dumps(row | {"description": "caf_ cup"}).encode().replace(b"caf_", "café".encode("latin-1"))


CATALOGUE = {
    "malformed JSON": Case(lambda row: json.dumps(row).encode()[:-7], 422, "body"),
    "wrong type": Case(_with(quantity="three"), 422, "quantity"),
    "missing field": Case(_without("category"), 422, "category"),
    "extra field": Case(_with(colour="red"), 422, "colour"),
    "NaN": Case(_with(price=float("nan")), 422, "price"),
    "Infinity": Case(_with(price=float("inf")), 422, "price"),
    "huge string": Case(_with(description="broken " * 5_000), 413, "description"),
    "oversize body": Case(_with(description="x" * 2_100_000), 413, "body"),
    "non-image bytes": Case(_image(lambda _: b"%PDF-1.4 not an image at all"), 422, "image"),
    "truncated image": Case(_image(lambda png: png[: len(png) // 2]), 422, "image"),
    "decompression bomb": Case(_image(lambda _: decompression_bomb()), 413, "image"),
    "non-UTF-8 bytes": Case(_non_utf8, 422, "body"),
    "lone surrogate": Case(_with(description="broken \ud800 mug"), 422, "description"),
    "unknown cascade": Case(_with(), 404, "name", "/v1/cascades/no-such-cascade/predict"),
}


@pytest.mark.parametrize("name", list(CATALOGUE))
async def test_bad_input_is_a_4xx_naming_the_field_and_the_gateway_keeps_serving(
    gateway_client: Any, demo: DemoData, name: str
) -> None:
    case, row = CATALOGUE[name], request_row(demo)
    response = await gateway_client.post(
        case.path, content=case.body(row), headers={"content-type": "application/json"}
    )
    assert response.status_code == case.status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "field"}
    assert body["field"] == case.field
    named = "no-such-cascade" if case.field == "name" else case.field
    assert named in body["message"]
    after = await gateway_client.post(PREDICT, json=request_row(demo))
    assert after.status_code == 200, after.text


def test_the_bomb_is_small_and_inflates_to_400_megapixels() -> None:
    bomb = decompression_bomb()
    assert len(bomb) < 100_000
    width, height = struct.unpack(">II", bomb[16:24])
    (size,) = struct.unpack(">I", bomb[33:37])
    assert (width, height, bomb[37:41]) == (20_000, 20_000, b"IDAT")
    assert len(zlib.decompress(bomb[41 : 41 + size])) == 20_000 * (1 + 2_500)


async def test_unknown_entity_is_served_with_training_defaults_and_flags(
    gateway_client: Any, demo: DemoData
) -> None:
    response = await gateway_client.post(PREDICT, json=request_row(demo) | {"customer_id": 987_654_321})
    assert response.status_code == 200, response.text
    [answer] = response.json()["predictions"]
    cascade = gateway_client.gateway.registry.get(CASCADE)
    defaults = {f.name: f.default for f in cascade.spec.online_features}
    assert answer["defaults_used"] is True
    assert answer["features"] == defaults
    flagged = {f["field"] for f in answer["skew_flags"] if f["kind"] == "missing_online_feature"}
    assert flagged == set(defaults)
    first = answer["skew_flags"][0]
    assert (first["kind"], first["field"]) == ("unknown_entity", "customer_id")
    assert "987654321" in first["detail"]


async def test_unknown_entity_is_a_422_naming_the_key_when_the_operator_rejects_it(
    tmp_path: Path, champion_tag: str, online_rows: dict[int, dict[str, float | None]], demo: DemoData
) -> None:
    row = request_row(demo)
    refused, served = await _with_rejected(
        tmp_path, online_rows, "unknown_entity", row | {"customer_id": 987_654_321}, row
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "customer_id"
    assert "987654321 is not in the online store" in refused.json()["message"]
    assert served.status_code == 200, served.text
    assert all(f["kind"] != "unknown_entity" for f in served.json()["predictions"][0]["skew_flags"])


async def test_mixed_script_text_is_served_and_flagged(gateway_client: Any, demo: DemoData) -> None:
    response = await gateway_client.post(PREDICT, json=request_row(demo) | {"description": MIXED_SCRIPT})
    assert response.status_code == 200, response.text
    [answer] = response.json()["predictions"]
    flags = [f for f in answer["skew_flags"] if f["kind"] == "out_of_vocabulary"]
    assert [f["field"] for f in flags] == ["description"]


async def test_mixed_script_text_is_refused_when_the_operator_rejects_the_flag(
    tmp_path: Path, champion_tag: str, online_rows: dict[int, dict[str, float | None]], demo: DemoData
) -> None:
    row = request_row(demo)
    refused, served = await _with_rejected(
        tmp_path, online_rows, "out_of_vocabulary", row | {"description": MIXED_SCRIPT}, row
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "description"
    assert served.status_code == 200, served.text


async def _with_rejected(
    tmp_path: Path,
    online_rows: dict[int, dict[str, float | None]],
    kinds: str,
    flagged: dict[str, Any],
    ordinary: dict[str, Any],
) -> tuple[httpx.Response, httpx.Response]:
    """The answers to ``flagged`` and then ``ordinary`` from a gateway rejecting the flag ``kinds``."""
    gateway = make_gateway(tmp_path, StaticFeatureSource(online_rows), SKEWGUARD_GUARD_REJECT=kinds)
    async with LifespanManager(create_app(gateway)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.post(PREDICT, json=flagged), await client.post(PREDICT, json=ordinary)


async def test_a_rejected_request_fails_alone_and_the_requests_gathered_with_it_are_answered(
    tmp_path: Path, champion_tag: str, online_rows: dict[int, dict[str, float | None]], demo: DemoData
) -> None:
    rows = [request_row(demo, i) for i in range(-6, 0)]
    flagged = {"rows": [rows[3], rows[4] | {"description": MIXED_SCRIPT}]}
    bodies: list[dict[str, Any]] = [*rows[:3], flagged, rows[5]]
    gateway = make_gateway(
        tmp_path, StaticFeatureSource(online_rows), SKEWGUARD_GUARD_REJECT="out_of_vocabulary"
    )
    async with LifespanManager(create_app(gateway)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            alone = [(await client.post(PREDICT, json=body)).json() for body in bodies]
            runner = gateway.registry.get(CASCADE).runner
            calls = runner.calls
            together = await asyncio.gather(*(client.post(PREDICT, json=body) for body in bodies))
            ran = runner.calls - calls
    assert [r.status_code for r in together] == [200, 200, 200, 422, 200]
    assert together[3].json() == alone[3]  # the same refusal, naming the field, as when sent alone
    assert alone[3]["field"] == "description"
    assert ran < len(bodies) - 1  # the admitted requests shared runs
    for got, expected in zip(together, alone, strict=True):
        if got.status_code == 200:
            for key in ("prediction", "route", "skew_flags", "features"):
                assert [p[key] for p in got.json()["predictions"]] == [
                    p[key] for p in expected["predictions"]
                ]
