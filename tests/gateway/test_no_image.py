"""A tabular+text cascade (trained without the photo) beside the image one, in one gateway.

A request without an image exists only if a cascade's graphs have no image input (the gateway
benchmark measures such requests). Both cascades here are packaged for real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from returns_data import DemoData
from returns_models import (
    ENTITY_KEY,
    FEATURE_VIEW,
    ONLINE,
    feature_columns,
    make_pipeline,
    split_by_time,
    training_frame,
)

from skewguard.bentos.manifest import compose_manifest, promote, save_manifest
from skewguard.bentos.package import package_model
from skewguard.bentos.store import load_model
from skewguard.gateway.app import create_app
from skewguard.gateway.features import StaticFeatureSource
from tests.conftest import RETURNS_ROUTES
from tests.gateway.conftest import CASCADE, make_gateway, request_row

pytestmark = pytest.mark.anyio
TEXT_CASCADE = "gwtext"


@pytest.fixture(scope="module")
def text_champion(demo: DemoData) -> str:
    """Router and specialists without the image (linear heads, small data), packaged and promoted."""
    train, test = split_by_time(training_frame(demo).drop(columns=["image"]))
    columns = feature_columns(image=False)
    parts = {
        "router": (train, "is_reseller"),
        "reseller": (train[train["is_reseller"] == 1], "returned"),
        "retail": (train[train["is_reseller"] == 0], "returned"),
    }
    tags = {}
    for role, (rows, target) in parts.items():
        tags[role] = package_model(
            make_pipeline("lr", image=False).fit(rows[columns], rows[target]),
            test[columns].iloc[:80],
            name=f"{TEXT_CASCADE}-{role}",
            X_profile=rows[columns],
            entity_key=ENTITY_KEY,
            online_features={feature: f"{FEATURE_VIEW}:{feature}" for feature in ONLINE},
        )
    manifest = compose_manifest(
        TEXT_CASCADE,
        router_tag=tags["router"],
        routes=RETURNS_ROUTES,
        threshold=0.5,
        positive_class="1",
        branches={"reseller": tags["reseller"], "retail": tags["retail"]},
    )
    tag = save_manifest(manifest)
    promote(tag)
    return tag


@pytest.fixture
async def both_client(
    tmp_path: Path,
    champion_tag: str,
    text_champion: str,
    online_rows: dict[int, dict[str, float | None]],
) -> AsyncIterator[Any]:
    import httpx
    from asgi_lifespan import LifespanManager

    gateway = make_gateway(
        tmp_path, StaticFeatureSource(online_rows), SKEWGUARD_CASCADES=f"{CASCADE},{TEXT_CASCADE}"
    )
    async with LifespanManager(create_app(gateway)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


def _without_image(demo: DemoData, i: int = -1) -> dict[str, Any]:
    row = request_row(demo, i)
    del row["image"]
    return row


def test_text_cascade_graphs_have_no_image_input(text_champion: str) -> None:
    from skewguard.bentos.manifest import load_manifest

    for tag in load_manifest(text_champion).model_tags().values():
        assert "image" not in load_model(tag).spec.names


async def test_request_without_image_is_served_by_the_text_cascade(
    both_client: Any, demo: DemoData, text_champion: str
) -> None:
    rows = [_without_image(demo, i) for i in range(-30, 0)]
    response = await both_client.post(f"/v1/cascades/{TEXT_CASCADE}/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert len(answers) == 30
    assert {a["route"] for a in answers} <= {"reseller", "retail"}
    assert all(abs(sum(a["probabilities"].values()) - 1) < 1e-6 for a in answers)
    assert answers[0]["versions"]["cascade"] == text_champion
    assert answers[0]["versions"]["router"].startswith(f"{TEXT_CASCADE}-router:")
    listed = {c["name"]: c for c in (await both_client.get("/v1/cascades")).json()["cascades"]}
    assert "image" not in listed[TEXT_CASCADE]["request_fields"]
    assert "image" in listed[CASCADE]["request_fields"]


async def test_image_cascade_still_requires_the_image(both_client: Any, demo: DemoData) -> None:
    response = await both_client.post(f"/v1/cascades/{CASCADE}/predict", json=_without_image(demo))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "image"
    with_image = await both_client.post(f"/v1/cascades/{CASCADE}/predict", json=request_row(demo))
    assert with_image.status_code == 200, with_image.text
