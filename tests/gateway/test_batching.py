"""Gathering concurrent requests: one run for many requests, each gets exactly its own rows back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from returns_data import DemoData

from skewguard.bentos.inputs import Batch, Values, prepare_rows, stack
from skewguard.bentos.manifest import load_manifest
from skewguard.errors import ConversionError, UpstreamTimeoutError
from skewguard.gateway.batching import INLINE_ROWS, GatheredCascade, LocalCascade, RowResult
from skewguard.gateway.cascades import LoadedCascade
from tests.gateway.conftest import CASCADE, request_row

pytestmark = pytest.mark.anyio
PREDICT = f"/v1/cascades/{CASCADE}/predict"


async def test_concurrent_requests_share_runs_and_get_their_own_answers(
    gateway_client: Any, demo: DemoData
) -> None:
    rows = [request_row(demo, i) for i in range(-40, 0)]
    alone = [(await gateway_client.post(PREDICT, json=row)).json()["predictions"][0] for row in rows]
    runner = gateway_client.gateway.registry.get(CASCADE).runner
    calls_before, rows_before = runner.calls, runner.rows

    bodies = [{"rows": rows[i : i + 3]} for i in range(0, len(rows), 3)] + [row for row in rows]
    responses = await asyncio.gather(*(gateway_client.post(PREDICT, json=body) for body in bodies))

    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    together = [p for r in responses for p in r.json()["predictions"]]
    assert len(together) == 2 * len(rows)
    for got, expected in zip(together, alone + alone, strict=True):
        assert got["route"] == expected["route"]
        assert got["prediction"] == expected["prediction"]
        assert got["router_probability"] == pytest.approx(expected["router_probability"], abs=1e-6)
        for label, p in expected["probabilities"].items():
            assert got["probabilities"][label] == pytest.approx(p, abs=1e-6)
    assert runner.rows - rows_before == 2 * len(rows)
    assert runner.calls - calls_before < len(bodies)  # gathered: fewer runs than requests


class _Gate:
    """An inner cascade that answers only when released: requests pile up meanwhile."""

    def __init__(self, inner: LocalCascade) -> None:
        self.inner = inner
        self.release = asyncio.Event()
        self.sizes: list[int] = []
        self.fail: Exception | None = None

    @property
    def waiting_on(self) -> str:
        return "the gate"

    async def run(self, batch: Batch, rows: Sequence[Mapping[str, Any]], deadline: float) -> list[RowResult]:
        self.sizes.append(len(batch))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return self.inner.run_now(batch)


def _gated(cascade: LoadedCascade, max_rows: int = 256) -> tuple[GatheredCascade, _Gate]:
    manifest = load_manifest(cascade.manifest.tag)
    local = cascade.runner.inner  # type: ignore[attr-defined]
    assert isinstance(local, LocalCascade)
    gate = _Gate(local)
    return GatheredCascade(manifest.name, gate, max_rows=max_rows), gate


async def _one_row_batches(
    gateway_client: Any, demo: DemoData, n: int
) -> list[tuple[Values, dict[str, Any]]]:
    cascade = gateway_client.gateway.registry.get(CASCADE)
    out = []
    for i in range(-n, 0):
        row = request_row(demo, i)
        row.update(dict.fromkeys(cascade.manifest.feature_refs, 1.0))
        out.append((prepare_rows(cascade.spec, [row], allowed_extra=("customer_id",)).values(), row))
    return out


async def test_requests_queued_during_a_run_go_in_the_next_one_up_to_max_rows(
    gateway_client: Any, demo: DemoData
) -> None:
    gathered, gate = _gated(gateway_client.gateway.registry.get(CASCADE), max_rows=4)
    batches = await _one_row_batches(gateway_client, demo, 9)
    deadline = time.monotonic() + 30
    first = asyncio.create_task(gathered.run(batches[0][0], [batches[0][1]], deadline))
    await asyncio.sleep(0.05)
    tasks = [first] + [asyncio.create_task(gathered.run(b, [r], deadline)) for b, r in batches[1:]]
    await asyncio.sleep(0.05)
    assert gate.sizes == [1]  # the first ran alone; the eight after it wait for it
    gate.release.set()
    results = await asyncio.gather(*tasks)
    assert gate.sizes == [1, 4, 4]
    expected = [gate.inner.run_now(stack([b]))[0] for b, _ in batches]
    assert [r.results[0].route for r in results] == [e.route for e in expected]
    assert [r.results[0].router_probability for r in results] == pytest.approx(
        [e.router_probability for e in expected]
    )


async def test_a_request_out_of_time_gets_a_504_naming_what_it_waited_for(
    gateway_client: Any, demo: DemoData
) -> None:
    gathered, gate = _gated(gateway_client.gateway.registry.get(CASCADE))
    [(batch, row)] = await _one_row_batches(gateway_client, demo, 1)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match="the gate"):
        await gathered.run(batch, [row], started + 0.2)
    assert time.monotonic() - started >= 0.2
    gate.release.set()  # the late answer goes nowhere; the next request is served
    [result] = (await gathered.run(batch, [row], time.monotonic() + 30)).results
    assert result.route in {"reseller", "retail"}


async def test_a_failed_run_is_the_answer_of_every_request_in_it(gateway_client: Any, demo: DemoData) -> None:
    gathered, gate = _gated(gateway_client.gateway.registry.get(CASCADE))
    batches = await _one_row_batches(gateway_client, demo, 3)
    gate.fail = ConversionError("onnxruntime failed")
    deadline = time.monotonic() + 30
    tasks = [asyncio.create_task(gathered.run(b, [r], deadline)) for b, r in batches]
    await asyncio.sleep(0.05)
    gate.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, ConversionError) for o in outcomes)
    gate.fail = None
    assert len((await gathered.run(batches[0][0], [batches[0][1]], deadline)).results) == 1


async def test_a_reload_lets_the_old_cascades_thread_end(gateway_client: Any, demo: DemoData) -> None:
    import threading

    def onnx_threads() -> int:  # other tests' gateways may still hold theirs: count, then compare
        return sum(t.name.startswith(f"onnx-{CASCADE}") for t in threading.enumerate())

    large = {"rows": [request_row(demo, i) for i in range(INLINE_ROWS + 1)]}  # runs in the thread
    assert (await gateway_client.post(PREDICT, json=large)).status_code == 200
    serving = onnx_threads()
    assert serving >= 1
    for _ in range(3):
        await gateway_client.gateway.reload()
        assert (await gateway_client.post(PREDICT, json=large)).status_code == 200
        for _ in range(50):  # the old executor's thread ends once nothing refers to it
            if onnx_threads() == serving:
                break
            await asyncio.sleep(0.02)
        assert onnx_threads() == serving


async def test_small_batches_run_on_the_event_loop_and_large_ones_in_the_cascades_thread(
    gateway_client: Any, demo: DemoData
) -> None:
    import threading

    local = gateway_client.gateway.registry.get(CASCADE).runner.inner
    assert isinstance(local, LocalCascade)
    ran_in: list[str] = []
    run_now = local.run_now

    def recording(batch: Batch) -> list[RowResult]:
        ran_in.append(threading.current_thread().name)
        return run_now(batch)

    local.run_now = recording  # type: ignore[method-assign]
    try:
        small = {"rows": [request_row(demo, i) for i in range(INLINE_ROWS)]}
        large = {"rows": [request_row(demo, i) for i in range(INLINE_ROWS + 1)]}
        for body in (small, large):
            response = await gateway_client.post(PREDICT, json=body)
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == len(body["rows"])
    finally:
        del local.run_now
    assert ran_in[0] == threading.current_thread().name  # the test's loop is the gateway's
    assert ran_in[1].startswith(f"onnx-{CASCADE}")


async def test_a_failure_while_preparing_a_run_is_a_500_for_its_requests_not_a_wait(
    gateway_client: Any, demo: DemoData, monkeypatch: pytest.MonkeyPatch
) -> None:
    class BrokenGuard:
        def check(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the guard broke")

    runner = gateway_client.gateway.registry.get(CASCADE).runner
    monkeypatch.setattr(runner, "guard", BrokenGuard())
    responses = await asyncio.gather(
        *(gateway_client.post(PREDICT, json=request_row(demo, i)) for i in range(3))
    )
    assert [r.status_code for r in responses] == [500, 500, 500]
    assert all(r.json()["code"] == "internal_error" for r in responses)  # answered at once, not a 504 later
