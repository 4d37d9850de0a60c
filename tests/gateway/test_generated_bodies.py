"""Arbitrary JSON bodies, generated, against the gateway in-process: never a 5xx, never an exception.

Hypothesis writes JSON text itself, so it can send what no JSON library writes by default:
nesting thousands of levels deep, integer literals of hundreds of digits, NaN and Infinity,
lone UTF-16 surrogates (``\\ud800``) in keys and values, wide objects and arrays. The bodies
are whole documents, valid rows with fields or keys replaced by such values, and batches of
them. Every answer must be a 2xx or a 4xx with a JSON ``{"code", "message"}``; the app raising,
or answering 5xx, fails. Hypothesis runs derandomized (CI replays the same cases), ``EXAMPLES``
of them; the answers are tallied by status and printed. The app runs on an event loop of its
own, so Hypothesis stays synchronous and shrinks a failing body as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns_data import DemoData

from skewguard.gateway.app import create_app
from skewguard.gateway.features import StaticFeatureSource
from tests.gateway.conftest import CASCADE, make_gateway, request_row

pytestmark = pytest.mark.slow
T = TypeVar("T")
PREDICT = f"/v1/cascades/{CASCADE}/predict"
EXAMPLES = 400
FIELDS = ["customer_id", "price", "quantity", "category", "description", "order_ts", "image", "rows"]


@dataclass(frozen=True, slots=True)
class Raw:
    """JSON text written as is: a number literal of any length, or a value nested ``levels`` deep."""

    text: str


def render(value: Any) -> str:
    """JSON text of ``value``; strings escaped to ASCII (lone surrogates as ``\\udXXX``)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    return json.dumps(value)  # NaN and Infinity as their non-standard literals


surrogates = st.integers(0xD800, 0xDFFF).map(chr)
text = st.text(st.one_of(st.characters(), surrogates), max_size=12)
keys = st.one_of(st.sampled_from(FIELDS), text)
digits = st.integers(1, 700).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n))
numbers = st.one_of(
    st.integers(),
    st.floats(),
    st.builds(lambda sign, d: Raw(sign + d), st.sampled_from(["", "-"]), digits),
    st.builds(lambda d, e: Raw(f"{d}e{e}"), digits, st.integers(-400, 400)),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=20), st.dictionaries(keys, inner, max_size=20)),
    max_leaves=40,
)


def _deep(inner: Any, levels: int, kind: str) -> Raw:
    opening, closing = ("[", "]") if kind == "list" else ('{"a": ', "}")
    return Raw(opening * levels + render(inner) + closing * levels)


deep = st.builds(_deep, values, st.integers(1, 3_000), st.sampled_from(["list", "object"]))
any_value = st.one_of(values, deep)


def mutated_row(row: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``row`` with some fields replaced, removed or added, each by any JSON value."""
    return st.builds(
        lambda changes, dropped: {k: v for k, v in (row | changes).items() if k not in dropped},
        st.dictionaries(keys, any_value, max_size=3),
        st.sets(st.sampled_from(sorted(row)), max_size=2),
    )


def bodies(row: dict[str, Any]) -> st.SearchStrategy[str]:
    rows = st.one_of(mutated_row(row), st.just(row))
    return st.one_of(
        any_value.map(render),
        mutated_row(row).map(render),
        st.lists(rows, min_size=1, max_size=5).map(lambda r: render({"rows": r})),
        st.builds(
            lambda r, extra: render({"rows": r} | extra),
            st.lists(rows, max_size=3),
            st.dictionaries(keys, any_value, max_size=2),
        ),
    )


class AppInALoop:
    """The gateway app with its lifespan and a client, on an event loop in a thread of its own.

    Hypothesis runs examples synchronously; each is sent with ``post`` and waited for here.
    """

    def __init__(self, gateway: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="generated-bodies", daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self._client: httpx.AsyncClient = self._run(self._open(gateway))

    async def _open(self, gateway: Any) -> httpx.AsyncClient:
        manager = await self._stack.enter_async_context(LifespanManager(create_app(gateway)))
        transport = httpx.ASGITransport(app=manager.app)
        return await self._stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://gw")
        )

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def post(self, body: bytes) -> httpx.Response:
        return self._run(
            self._client.post(PREDICT, content=body, headers={"content-type": "application/json"})
        )

    def close(self) -> None:
        self._run(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def app(
    tmp_path: Path, champion_tag: str, online_rows: dict[int, dict[str, float | None]]
) -> Iterator[AppInALoop]:
    served = AppInALoop(make_gateway(tmp_path, StaticFeatureSource(online_rows)))
    yield served
    served.close()


def test_generated_json_bodies_get_no_5xx(app: AppInALoop, demo: DemoData) -> None:
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies(request_row(demo)))
    def answer(body: str) -> None:
        response = app.post(body.encode())
        statuses[response.status_code] += 1
        assert response.status_code < 500, response.text
        if response.status_code != 200:
            assert {"code", "message"} <= set(response.json()), response.text
            assert response.status_code in (413, 422), response.text

    answer()
    print(f"\n{statuses.total()} generated bodies, answered {dict(sorted(statuses.items()))}")
    assert statuses.total() >= EXAMPLES
    assert statuses[200] > 0, statuses  # bodies that reached the models were sent
    assert statuses[422] > 0, statuses
