"""A canary across replicas that share only the alias store and the model export.

Two ``skewguard serve`` processes, each with a model store of its own (empty at start), follow
a canary attached in the test process the way they follow a promotion: from the alias in
Redis, its candidate manifest imported from the export. An entity then sees the same variant
whichever replica answers it — the assignment hashes its key, and nothing else — and each
canary answer is routed by the candidate's own rule.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from skewguard.bentos.aliases import configured
from skewguard.bentos.manifest import promote
from skewguard.bentos.variants import attach_variant
from tests.deploy.conftest import CASCADE, PREDICT, candidate
from tests.deploy.test_replicas import STORES, _replicas
from tests.gateway.conftest import request_row
from tests.gateway.test_server import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FOLLOW_TIMEOUT = 60.0


def _variant(server: Server) -> dict[str, Any] | None:
    [cascade] = httpx.get(f"{server.url}/v1/cascades", timeout=10).json()["cascades"]
    variant: dict[str, Any] | None = cascade["variant"]
    return variant


def test_a_canary_reaches_every_replica_and_an_entity_sees_one_variant_across_them(
    tmp_path: Path, demo: Any, champion_tag: str
) -> None:
    shared = {
        "SKEWGUARD_ALIAS_URL": f"{STORES['redis']}?namespace=t{uuid.uuid4().hex[:10]}",
        "SKEWGUARD_MODEL_EXPORT": str(tmp_path / "export"),
    }
    new_tag = candidate(champion_tag, threshold=0.35)
    rows = [request_row(demo, -1 - i) for i in range(50)]
    with configured(shared["SKEWGUARD_ALIAS_URL"], shared["SKEWGUARD_MODEL_EXPORT"]):
        promote(champion_tag)
        with _replicas(2, tmp_path, shared) as servers:
            attach_variant(CASCADE, new_tag, "canary", 0.5)
            deadline = time.monotonic() + FOLLOW_TIMEOUT
            while not all((v := _variant(s)) is not None and v["serving"] for s in servers):
                assert time.monotonic() < deadline, [_variant(s) for s in servers]
                time.sleep(0.2)
            answers: dict[int, list[dict[str, Any]]] = {}
            for entity in range(6_000_000, 6_000_100):
                for server in servers:
                    body = rows[entity % 50] | {"customer_id": entity}
                    response = httpx.post(f"{server.url}{PREDICT}", json=body, timeout=10)
                    assert response.status_code == 200, response.text
                    answers.setdefault(entity, []).append(response.json()["predictions"][0])
    for entity, seen in answers.items():
        assert len({row["variant"] for row in seen}) == 1, (entity, seen)
    variants = [seen[0]["variant"] for seen in answers.values()]
    assert set(variants) == {"champion", "canary"}
    for seen in answers.values():
        for row in seen:
            threshold = 0.35 if row["variant"] == "canary" else 0.5
            assert row["versions"]["cascade"] == (new_tag if row["variant"] == "canary" else champion_tag)
            assert row["route"] == ("reseller" if row["router_probability"] >= threshold else "retail")
    exported = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert len(exported) == 5  # the three models and both manifests, once each
