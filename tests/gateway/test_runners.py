"""The remote runner's circuit breaker, against a BentoML service faked with ``httpx.MockTransport``
(and, for a host that drops connection attempts, a real socket whose accept queue is full).

A service that is unreachable or drops the connection opens the circuit: requests then fail
at once with a 503 without reaching it, while one probe polls its ``/readyz``; the first 200
closes the circuit. A service that is up but slow stays a 504 and opens nothing. The circuit
also answers the gateway's ``/readyz``, and a reload retires it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from skewguard.bentos.inputs import Batch, encode_rows
from skewguard.bentos.spec import FieldSpec, InputSpec
from skewguard.errors import UpstreamTimeoutError, UpstreamUnavailableError
from skewguard.gateway.runners import PROBE_INTERVAL_S, PROBE_TIMEOUT_S, Predictions, RemoteBentoRunner

pytestmark = pytest.mark.anyio

TAG = "returns-router:abc123"
URL = "http://router.test:3000"
SPEC = InputSpec(fields=(FieldSpec("price", "numeric"),))
ROWS = [{"price": 12.5, "ignored": "not sent"}]
PROBABILITIES = {"0": 0.25, "1": 0.75}
ANSWER = {"label": 1, "probabilities": PROBABILITIES}


class FakeService:
    """The model's ``bentoml serve`` as a transport handler; ``calls`` counts requests per path."""

    def __init__(self) -> None:
        self.down = False
        """Refuse every connection, as a killed service does."""
        self.refuse_next = 0
        """Refuse this many connections, then answer."""
        self.predict_error: Callable[[httpx.Request], Exception] | None = None
        self.readyz_status = 200
        self.readyz_error: Callable[[httpx.Request], Exception] | None = None
        self.calls: Counter[str] = Counter()
        """Requests that reached the service, per path."""
        self.refused = 0
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down or self.refuse_next > 0:
            self.refuse_next = max(0, self.refuse_next - 1)
            self.refused += 1
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        self.calls[request.url.path] += 1
        if request.url.path == "/readyz":
            if self.readyz_error is not None:
                raise self.readyz_error(request)
            return httpx.Response(self.readyz_status, json={"ready": self.readyz_status == 200})
        if self.predict_error is not None:
            raise self.predict_error(request)
        self.sent = json.loads(request.read())["rows"]
        return httpx.Response(200, json={"predictions": [ANSWER] * len(self.sent)})


class Remote:
    """A runner over the fake service, and what a request needs to call it."""

    def __init__(self, service: FakeService, client: httpx.AsyncClient) -> None:
        self.service = service
        self.client = client
        self.runner = RemoteBentoRunner(TAG, URL, client, ["price"])
        self.batch: Batch = encode_rows(SPEC, ROWS, allowed_extra=["ignored"])

    async def predict(self, budget: float = 1.0) -> Predictions:
        return await self.runner.predict(self.batch, ROWS, time.monotonic() + budget)

    async def fails(self) -> UpstreamUnavailableError:
        with pytest.raises(UpstreamUnavailableError) as caught:
            await self.predict()
        return caught.value


def _probes() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("probe ")]


async def _wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def remote() -> AsyncIterator[Remote]:
    service = FakeService()
    client = httpx.AsyncClient(transport=httpx.MockTransport(service))
    try:
        yield Remote(service, client)
    finally:
        await client.aclose()
        await _wait_until(lambda: not _probes())


async def test_a_reachable_service_answers_with_only_the_model_fields_sent(remote: Remote) -> None:
    out = await remote.predict()
    assert out == Predictions([{"label": 1, "probabilities": PROBABILITIES}])
    assert remote.service.sent == [{"price": 12.5}]
    assert not remote.runner.circuit.is_open
    assert remote.service.calls == Counter({"/predict": 1})


async def test_a_connect_error_opens_the_circuit_and_is_a_503_naming_the_model(remote: Remote) -> None:
    remote.service.down = True
    error = await remote.fails()
    assert error.status_code == 503
    assert error.code == "upstream_unavailable"
    assert TAG in error.message
    assert f"{URL}/predict" in error.message
    assert "Connection refused" in error.message
    assert remote.runner.circuit.is_open
    assert remote.service.refused == 2  # sent again once: it never reached the service


async def test_while_open_predict_fails_fast_without_reaching_the_service(remote: Remote) -> None:
    remote.service.down = True
    await remote.fails()
    remote.service.down = False
    remote.service.readyz_status = 503  # up again, not ready yet
    errors = [await remote.fails() for _ in range(50)]
    assert remote.service.calls["/predict"] == 0
    assert {e.message for e in errors} == {errors[0].message}
    assert TAG in errors[0].message
    assert f"{URL}/readyz" in errors[0].message
    assert "answers 200" in errors[0].message


async def test_the_probe_keeps_it_open_on_a_503_and_closes_it_on_the_first_200(remote: Remote) -> None:
    remote.service.down = True
    await remote.fails()
    remote.service.down = False
    remote.service.readyz_status = 503
    await asyncio.sleep(4 * PROBE_INTERVAL_S)
    assert remote.runner.circuit.is_open
    assert remote.service.calls["/readyz"] >= 2
    await remote.fails()

    remote.service.readyz_status = 200
    await _wait_until(lambda: not remote.runner.circuit.is_open, timeout=10 * PROBE_INTERVAL_S)
    assert (await remote.predict()).answers == [ANSWER]
    assert remote.service.calls["/predict"] == 1
    polled = remote.service.calls["/readyz"]
    await asyncio.sleep(2 * PROBE_INTERVAL_S)
    assert _probes() == []  # closed: nobody polls any more
    assert remote.service.calls["/readyz"] == polled


async def test_one_probe_at_a_time_however_many_requests_fail(remote: Remote) -> None:
    remote.service.down = True
    await asyncio.gather(*(remote.fails() for _ in range(20)))
    await asyncio.gather(*(remote.fails() for _ in range(20)))
    assert len(_probes()) == 1


async def test_a_retry_after_a_refused_connection_keeps_the_circuit_closed(remote: Remote) -> None:
    remote.service.refuse_next = 1
    assert (await remote.predict()).answers == [ANSWER]
    assert (remote.service.refused, remote.service.calls["/predict"]) == (1, 1)
    assert not remote.runner.circuit.is_open
    assert _probes() == []


@pytest.mark.parametrize("dropped", [httpx.RemoteProtocolError, httpx.ReadError])
async def test_a_connection_dropped_mid_request_opens_it_and_is_never_sent_twice(
    remote: Remote, dropped: type[httpx.TransportError]
) -> None:
    remote.service.predict_error = lambda request: dropped("Server disconnected", request=request)
    error = await remote.fails()
    assert remote.service.calls["/predict"] == 1  # it may have reached the model: not resent
    assert dropped.__name__ in error.message
    assert remote.runner.circuit.is_open


async def test_a_timeout_is_a_504_and_leaves_the_circuit_closed(remote: Remote) -> None:
    remote.service.predict_error = lambda request: httpx.ReadTimeout("timed out", request=request)
    with pytest.raises(UpstreamTimeoutError) as caught:
        await remote.predict()
    assert caught.value.status_code == 504
    assert TAG in caught.value.message
    assert not remote.runner.circuit.is_open
    assert _probes() == []

    remote.service.predict_error = None  # the slow model is fast again: served at once
    assert (await remote.predict()).answers == [ANSWER]
    assert remote.service.calls == Counter({"/predict": 2})


async def test_the_probe_ends_quietly_when_the_gateway_closes_its_client(remote: Remote) -> None:
    remote.service.down = True
    await remote.fails()
    [probe] = _probes()
    await remote.client.aclose()  # what the gateway's lifespan does on shutdown
    await asyncio.wait_for(probe, timeout=10 * PROBE_INTERVAL_S)
    assert probe.exception() is None
    await remote.fails()  # still open, and no new probe on a closed client
    assert _probes() == []


async def test_no_connection_with_budget_to_spare_opens_it_as_a_refused_one_does(remote: Remote) -> None:
    remote.service.predict_error = lambda request: httpx.ConnectTimeout("timed out", request=request)
    error = await remote.fails()  # the attempt had the whole 1 s budget to connect
    assert error.status_code == 503
    assert "ConnectTimeout" in error.message
    assert remote.runner.circuit.is_open
    assert remote.service.calls["/predict"] == 1  # not sent again: the budget is spent


async def test_a_connect_timeout_cut_short_by_the_budget_is_a_504_and_opens_nothing(remote: Remote) -> None:
    remote.service.predict_error = lambda request: httpx.ConnectTimeout("timed out", request=request)
    with pytest.raises(UpstreamTimeoutError):
        await remote.predict(budget=PROBE_TIMEOUT_S / 2)
    assert not remote.runner.circuit.is_open
    assert _probes() == []


async def test_a_host_that_drops_connection_attempts_opens_it_after_the_probe_timeout() -> None:
    # A listening socket whose accept queue is full: Linux drops further SYNs, as a host that is
    # down (or a firewall) does, so the connection attempt hangs rather than being refused.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue, never accepted
            async with httpx.AsyncClient() as client:
                runner = RemoteBentoRunner(TAG, f"http://127.0.0.1:{port}", client, ["price"])
                batch = encode_rows(SPEC, ROWS, allowed_extra=["ignored"])
                budget = 2 * PROBE_TIMEOUT_S
                started = time.monotonic()
                with pytest.raises(UpstreamUnavailableError) as caught:
                    await runner.predict(batch, ROWS, started + budget)
                waited = time.monotonic() - started
                assert runner.circuit.is_open
                started = time.monotonic()
                with pytest.raises(UpstreamUnavailableError):  # the next one fails at once
                    await runner.predict(batch, ROWS, started + budget)
                failed_fast = time.monotonic() - started
    assert "ConnectTimeout" in caught.value.message
    assert waited >= budget * 0.9  # it did wait for the connection, until the budget ran out
    assert failed_fast < PROBE_TIMEOUT_S / 2


async def test_readiness_tells_apart_ready_starting_unreachable_and_open(remote: Remote) -> None:
    circuit = remote.runner.circuit
    assert await circuit.problem() is None
    remote.service.readyz_status = 503  # up, still loading: not ready, but not a failure either
    assert await circuit.problem() == f"{URL}/readyz answered 503"
    assert not circuit.is_open

    remote.service.down = True
    unreachable = await circuit.problem()
    assert unreachable is not None
    assert "unreachable" in unreachable
    assert "ConnectError" in unreachable
    assert circuit.is_open  # as a failed request would have opened it
    assert remote.service.calls["/predict"] == 0
    opened = await circuit.problem()
    assert opened is not None
    assert "open circuit" in opened

    remote.service.down, remote.service.readyz_status = False, 200
    await _wait_until(lambda: not circuit.is_open, timeout=10 * PROBE_INTERVAL_S)
    assert await circuit.problem() is None


async def test_a_retired_circuit_stops_probing_and_starts_no_new_probe(remote: Remote) -> None:
    remote.service.down = True
    await remote.fails()
    [probe] = _probes()
    remote.runner.circuit.retire()  # what a reload does to the version it replaced
    await asyncio.wait([probe], timeout=10 * PROBE_INTERVAL_S)
    assert probe.cancelled()
    await remote.fails()  # a request still holding the old version fails fast as before
    assert _probes() == []


async def test_readiness_of_a_connected_but_slow_service_opens_nothing(remote: Remote) -> None:
    remote.service.readyz_error = lambda request: httpx.ReadTimeout("timed out", request=request)
    assert await remote.runner.circuit.problem() == f"{URL}/readyz did not answer within 0.5 s"
    assert not remote.runner.circuit.is_open
    assert _probes() == []
