"""The HTTP contract, fuzzed: schemathesis generates requests from the gateway's own /openapi.json.

The gateway under test is the real one — the session's champion cascade, a Feast SQLite
online store materialized from the demo data — driven in-process through schemathesis'
ASGI transport (which runs the app's lifespan). Every documented operation gets positive
cases (valid per the schema) and negative ones (the schema violated on purpose). Two
thirds of the positive predict cases carry a real demo image (random base64 is never an
image), half of those a real timestamp too (random years mostly fall outside 1677-2262),
so random prices, categories, texts, timestamps, nulls and entity keys also reach the
online store, the skew guard and the models.

Each response must be no 5xx, a documented status with a documented content type, a body
that matches its documented schema, and for negative cases a 4xx. The number of cases
actually sent is counted and must reach ``MIN_CASES``. Hypothesis runs derandomized, so
CI replays the same cases.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from returns_data import DemoData, write_demo_data
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from skewguard.bentos.feature_store import FeastConfig
from skewguard.gateway.app import create_app
from skewguard.gateway.features import FeastFeatureSource
from skewguard.gateway.server import build_gateway
from skewguard.gateway.settings import GatewaySettings
from skewguard.pipeline.features import apply_features, materialize_features
from tests.gateway.conftest import CASCADE, request_row

pytestmark = pytest.mark.slow
MIN_CASES = 1_000
EXAMPLES = {GenerationMode.POSITIVE: 600, GenerationMode.NEGATIVE: 500}
"""Per mode, for the predict operation; the GET operations have a handful of distinct cases each."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
ANCHORED = [(), ("image",), ("image", "order_ts")]
"""Which fields of a positive case get real values: none, the image, the image and the timestamp."""
REJECTED = ["400", "401", "404", "413", "422"]
"""Negative data must be refused with one of these (413: a string past its maxLength)."""


@pytest.fixture(scope="module")
def feast_store(demo: DemoData, tmp_path_factory: pytest.TempPathFactory) -> FeastConfig:
    """The demo customers' features in a real Feast SQLite online store."""
    data = tmp_path_factory.mktemp("fuzz-data")
    write_demo_data(demo, data)
    config = FeastConfig(tmp_path_factory.mktemp("fuzz-feast"), data, f"sg_fuzz_{uuid.uuid4().hex[:10]}")
    apply_features(config)
    end = pd.Timestamp(demo.customer_stats["event_timestamp"].max()).to_pydatetime()
    materialize_features(config, end=end, start=datetime(2020, 1, 1, tzinfo=UTC))
    return config


@pytest.fixture(scope="module")
def schema(
    champion_tag: str, feast_store: FeastConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    gateway_settings = GatewaySettings.from_env(
        {
            "SKEWGUARD_HOME": str(tmp_path_factory.mktemp("fuzz-home")),
            "SKEWGUARD_CASCADES": CASCADE,
            "SKEWGUARD_WATCH_SECONDS": "0",
        }
    )
    app = create_app(build_gateway(gateway_settings, features=FeastFeatureSource(feast_store)))
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}}
    )
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    yield loaded
    from schemathesis.python import asgi  # runs the app's lifespan end: the prediction log drains

    asgi.shutdown_lifespans()


def _fuzz(operation: Any, mode: GenerationMode, examples: int, anchor: dict[str, Any]) -> Counter[int]:
    """Send up to ``examples`` generated cases to one operation; count the answers by status.

    A positive case is sent as generated, or with some of the fields in ``anchor`` (a real
    image; a real image and timestamp) set in every row, the rest left random.
    """
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), anchored=st.sampled_from(ANCHORED))
    def run(case: Any, anchored: tuple[str, ...]) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            for row in case.body.get("rows", [case.body]):  # a batch, or one row as is
                row.update({name: anchor[name] for name in anchored})
        response = case.call_and_validate(checks=CHECKS)
        statuses[response.status_code] += 1

    run()
    return statuses


def test_generated_requests_get_no_5xx_and_documented_answers(schema: Any, demo: DemoData) -> None:
    row = request_row(demo)
    anchor = {"image": row["image"], "order_ts": row["order_ts"]}
    counts: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES.items():
            if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue  # no parameters and no body: nothing to make invalid
            counts[f"{operation.label} {mode.value}"] = _fuzz(operation, mode, examples, anchor)
    predict = f"POST /v1/cascades/{CASCADE}/predict"
    positive, negative = counts[f"{predict} positive"], counts[f"{predict} negative"]
    assert positive[200] >= EXAMPLES[GenerationMode.POSITIVE] // 5, counts  # random values reach the models
    assert sum(negative.values()) >= EXAMPLES[GenerationMode.NEGATIVE] // 2, counts
    assert sum(sum(c.values()) for c in counts.values()) >= MIN_CASES, counts


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"order_ts": "0001-01-01T00:00:00+00:00"}, "order_ts"),  # past pandas' nanosecond range: was a 500
        ({"customer_id": 2**63}, "customer_id"),  # past Feast's int64 keys: was a 500
        ({"order_ts": 1e300}, "order_ts"),  # epoch seconds past 2**53: was a 200 with null probabilities
        (
            {"description": "broken \ud800 mug"},
            "description",
        ),  # a lone surrogate (found probing the catalogue): was a 500
    ],
)
async def test_inputs_that_were_500s_are_4xx_naming_the_field(
    gateway_client: Any, demo: DemoData, change: dict[str, Any], field: str
) -> None:
    body = json.dumps(request_row(demo) | change)  # ASCII with escapes, as the fuzzer sent it
    response = await gateway_client.post(f"/v1/cascades/{CASCADE}/predict", content=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["field"] == field


def test_the_epoch_limit_of_the_inputs_is_the_transforms_limit() -> None:
    from skewguard.bentos.inputs import MAX_EPOCH_SECONDS
    from skewguard.bentos.transforms import (
        MAX_EPOCH_SECONDS as TRANSFORM_LIMIT,  # imports sklearn: not at serving
    )

    assert MAX_EPOCH_SECONDS + 1 == TRANSFORM_LIMIT
