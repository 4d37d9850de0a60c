"""A real champion cascade in the session's model store, and a gateway app around it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from returns_data import DemoData, generate_demo_data
from returns_data import request_row as demo_request_row
from returns_models import (
    ENTITY_KEY,
    ONLINE,
)

from skewguard.bentos.manifest import compose_manifest, load_manifest, promote, save_manifest
from skewguard.gateway.app import Gateway, create_app
from skewguard.gateway.features import StaticFeatureSource
from skewguard.gateway.server import build_gateway
from skewguard.gateway.settings import GatewaySettings
from tests.conftest import RETURNS_FEATURES, RETURNS_ROUTES, package_cascade_models

CASCADE = "gwtest"
VARIANT_CASCADE = "gwvariant"
"""The session's champion models under a name of their own, for the tests that attach variants."""
FEAST_PROJECT = "skewguard_gwtest"
"""The Feast project the session's gateway cascade reads (tests that run Feast apply it)."""


@pytest.fixture(scope="session")
def demo() -> DemoData:
    return generate_demo_data(n_orders=2_000, n_customers=200, seed=11)


@pytest.fixture(scope="session")
def champion_tag(demo: DemoData) -> str:
    """Router and two specialists (linear heads, small data), packaged and promoted."""
    tags = package_cascade_models(demo, CASCADE, n_sample=80)
    manifest = compose_manifest(
        CASCADE,
        router_tag=tags["router"],
        routes=RETURNS_ROUTES,
        threshold=0.5,
        positive_class="1",
        branches={"reseller": tags["reseller"], "retail": tags["retail"]},
        feature_project=FEAST_PROJECT,
        **RETURNS_FEATURES,
    )
    tag = save_manifest(manifest)
    promote(tag)
    return tag


def compose_variant_version(router: str, branches: dict[str, str], threshold: float = 0.5) -> str:
    """A stored version of ``gwvariant`` over the given models (the returns routes, its features)."""
    manifest = compose_manifest(
        VARIANT_CASCADE,
        router_tag=router,
        routes=RETURNS_ROUTES,
        threshold=threshold,
        positive_class="1",
        branches=branches,
        feature_project=FEAST_PROJECT,
        **RETURNS_FEATURES,
    )
    return save_manifest(manifest)


@pytest.fixture(scope="session")
def variant_champion(champion_tag: str) -> str:
    """``gwvariant``'s champion: the session champion's models."""
    models = load_manifest(champion_tag)
    assert models.router is not None
    tag = compose_variant_version(models.router.tag, models.branches)
    promote(tag)
    return tag


@pytest.fixture(scope="session")
def twin_candidate(variant_champion: str) -> str:
    """A candidate over the champion's own models, routing at 0.35 instead of 0.5."""
    models = load_manifest(variant_champion)
    assert models.router is not None
    return compose_variant_version(models.router.tag, models.branches, threshold=0.35)


@pytest.fixture(scope="session")
def retrained_candidate(variant_champion: str) -> str:
    """A candidate of other models, fitted on other demo data."""
    tags = package_cascade_models(generate_demo_data(n_orders=2_000, n_customers=200, seed=12), "gwcand")
    return compose_variant_version(tags["router"], {"reseller": tags["reseller"], "retail": tags["retail"]})


@pytest.fixture(scope="session")
def online_rows(demo: DemoData) -> dict[int, dict[str, float | None]]:
    latest = demo.customer_stats.sort_values("event_timestamp").groupby(ENTITY_KEY).tail(1)
    return {int(r[ENTITY_KEY]): {name: float(r[name]) for name in ONLINE} for _, r in latest.iterrows()}


def request_row(demo: DemoData, i: int = -1) -> dict[str, Any]:
    """A raw request as a client sends it (image base64, timestamp ISO-8601)."""
    return demo_request_row(demo.orders.iloc[i])


def make_gateway(tmp_path: Path, features: StaticFeatureSource, **env: str) -> Gateway:
    values = {
        "SKEWGUARD_HOME": str(tmp_path),
        "SKEWGUARD_CASCADES": CASCADE,
        "SKEWGUARD_WATCH_SECONDS": "0",
        **env,
    }
    return build_gateway(GatewaySettings.from_env(values), features=features)


@pytest.fixture
async def gateway_client(
    tmp_path: Path, champion_tag: str, online_rows: dict[int, dict[str, float | None]]
) -> AsyncIterator[Any]:
    import httpx
    from asgi_lifespan import LifespanManager

    gateway = make_gateway(tmp_path, StaticFeatureSource(online_rows))
    app = create_app(gateway)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            client.gateway = gateway  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
