"""Model runners: how the gateway gets predictions from one model of a cascade.

``LocalRunner`` runs the ONNX graph in this process (co-located, the default).
``RemoteBentoRunner`` calls the model's own BentoML service over HTTP (``bentoml serve``),
with a pooled ``httpx.AsyncClient``, a timeout cut to what is left of the request's
budget, and one retry on connection errors only (a request that reached the service is
never sent twice). Both answer with the same ``Predictions``.

Each remote runner has a ``CircuitBreaker``: a call that finds the service unreachable or
loses the connection mid-request opens it, and while it is open requests fail at once with
a 503 instead of being sent. A restarted ``bentoml serve`` accepts connections before it
can answer, so without the breaker requests in that window would wait out their budget
(504s). A connection that is not made within ``PROBE_TIMEOUT_S`` (a host that is down
drops the connection attempt instead of refusing it) opens it too. A service that is up
but slower than the budget stays a 504 and opens nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from skewguard.bentos.inputs import Batch
from skewguard.bentos.runner import OnnxRunner
from skewguard.bentos.store import StoredModel
from skewguard.errors import UpstreamTimeoutError, UpstreamUnavailableError

PROBE_INTERVAL_S = 0.1
"""How often an open circuit asks the service's ``/readyz`` whether it is back."""
PROBE_TIMEOUT_S = 0.5
"""A ``/readyz`` slower than this counts as not ready (a service still starting), and a
connection not made in this long, with budget to spare, as the service unreachable."""


@dataclass(frozen=True, slots=True)
class Predictions:
    """Per row, the model's answer as ``OnnxRunner.predict_batch`` gives it: ``{"label",
    "probabilities"}`` from a classifier, ``{"prediction"}`` from a regressor."""

    answers: list[dict[str, Any]]


class ModelRunner(Protocol):
    """One model of a cascade, whatever runs it."""

    tag: str

    async def predict(self, batch: Batch, rows: Sequence[Mapping[str, Any]], deadline: float) -> Predictions:
        """Predict ``batch`` (validated columns) or, for remote runners, the same ``rows`` as JSON."""
        ...


class LocalRunner:
    """The graph in this process: one single-threaded onnxruntime session."""

    def __init__(self, model: StoredModel) -> None:
        self.tag = model.tag
        self._runner = OnnxRunner(model)

    async def predict(self, batch: Batch, rows: Sequence[Mapping[str, Any]], deadline: float) -> Predictions:
        # ~50 µs of CPU: cheaper inline than the hop to a worker thread.
        return Predictions(self._runner.predict_batch(batch))


class CircuitBreaker:
    """Whether a remote service is worth calling: closed (call it) or open (fail fast).

    ``trip()`` opens it and starts the one probe task, which polls ``readyz_url`` every
    ``interval`` seconds through ``client`` and closes the circuit on the first 200. The
    probe ends quietly once ``client`` is closed (the gateway shutting down).
    """

    def __init__(
        self,
        readyz_url: str,
        client: httpx.AsyncClient,
        *,
        interval: float = PROBE_INTERVAL_S,
        timeout: float = PROBE_TIMEOUT_S,
    ) -> None:
        self.readyz_url = readyz_url
        self.interval = interval
        self.timeout = timeout
        self.is_open = False
        self._client = client
        self._probe: asyncio.Task[None] | None = None
        self._retired = False

    def trip(self) -> None:
        """Open the circuit, and probe the service unless a probe already runs (event loop only)."""
        self.is_open = True
        if self._probe is None and not self._client.is_closed and not self._retired:
            self._probe = asyncio.create_task(self._close_when_ready(), name=f"probe {self.readyz_url}")

    def retire(self) -> None:
        """Stop probing for good: a reload replaced the cascade this circuit belongs to."""
        self._retired = True
        if self._probe is not None:
            self._probe.cancel()

    async def problem(self) -> str | None:
        """Why the service cannot serve now, or None: the circuit is open, or ``/readyz`` is not a 200.

        An unreachable service opens the circuit here, as a failed request would; one that is
        connected but slow to answer does not (a slow service stays a 504, never a 503).
        """
        if self._client.is_closed:
            return "the gateway is shutting down"
        if self.is_open:
            return f"open circuit: {self.readyz_url} has not answered 200 since the last failure"
        try:
            return await self._ask()
        except httpx.TransportError as exc:
            self.trip()
            return f"{self.readyz_url} is unreachable ({type(exc).__name__}); the circuit is now open"

    async def _ask(self) -> str | None:
        """None if ``/readyz`` answers 200 in time, else why not; raises if it is unreachable."""
        try:
            response = await self._client.get(self.readyz_url, timeout=self.timeout)
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            return f"{self.readyz_url} did not answer within {self.timeout:g} s"
        if response.status_code != 200:
            return f"{self.readyz_url} answered {response.status_code}"
        return None

    async def _close_when_ready(self) -> None:
        try:
            while not self._client.is_closed:  # checked right before each send: no await between
                if await self._is_ready():
                    self.is_open = False
                    return
                await asyncio.sleep(self.interval)
        finally:
            self._probe = None

    async def _is_ready(self) -> bool:
        try:
            return await self._ask() is None
        except httpx.TransportError:  # still down, starting, or the client closed meanwhile
            return False


class RemoteBentoRunner:
    """The model's BentoML service at ``url`` (``POST /predict {"rows": [...]}``)."""

    def __init__(self, tag: str, url: str, client: httpx.AsyncClient, fields: Sequence[str]) -> None:
        self.tag = tag
        base = url.rstrip("/")
        self.url = base + "/predict"
        self.circuit = CircuitBreaker(base + "/readyz", client)
        self._client = client
        self._fields = tuple(fields)

    async def predict(self, batch: Batch, rows: Sequence[Mapping[str, Any]], deadline: float) -> Predictions:
        if self.circuit.is_open:
            self.circuit.trip()  # keeps its probe running: a no-op while one does
            raise UpstreamUnavailableError(
                f"Model {self.tag} at {self.url} is down: the gateway answers 503 without calling it "
                f"until {self.circuit.readyz_url} answers 200. Start or restart that service."
            )
        body = {"rows": [{name: row[name] for name in self._fields} for row in rows]}
        response = await self._call(body, deadline)
        if response.status_code != 200:
            raise UpstreamUnavailableError(
                f"Model {self.tag} at {self.url} answered {response.status_code}: {response.text[:200]}"
            )
        return Predictions(response.json()["predictions"])

    async def _call(self, body: Mapping[str, Any], deadline: float) -> httpx.Response:
        """The POST, sent again once if it never connected; httpx's errors mapped to ours."""
        try:
            try:
                return await self._send(body, deadline)
            except httpx.ConnectError:  # refused before reaching the service: safe to resend
                return await self._send(body, deadline)
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:  # unreachable, or went away
            raise self._unreachable(exc) from exc
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout) and _connect_timeout(exc) >= PROBE_TIMEOUT_S:
                raise self._unreachable(exc) from exc  # not the budget's fault: nobody answered the SYN
            raise UpstreamTimeoutError(f"Model {self.tag} at {self.url} did not answer in time.") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(f"Model {self.tag} at {self.url} failed: {exc}.") from exc

    def _unreachable(self, exc: httpx.HTTPError) -> UpstreamUnavailableError:
        self.circuit.trip()
        return UpstreamUnavailableError(
            f"Model {self.tag} at {self.url} is unreachable or went away ({type(exc).__name__}: "
            f"{exc}); until {self.circuit.readyz_url} answers 200 the gateway answers 503 without "
            "calling it. Check that the service runs at that URL."
        )

    async def _send(self, body: Mapping[str, Any], deadline: float) -> httpx.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeoutError(f"Model {self.tag}: the request budget ran out before calling it.")
        return await self._client.post(self.url, json=body, timeout=remaining)


def _connect_timeout(exc: httpx.ConnectTimeout) -> float:
    """The seconds the failed attempt had to connect (its share of the request budget)."""
    try:
        timeouts = exc.request.extensions.get("timeout", {})
    except RuntimeError:  # raised without its request: nothing says the budget had room
        return 0.0
    connect = timeouts.get("connect")
    return float(connect) if connect is not None else 0.0
