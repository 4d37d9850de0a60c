"""The gateway's ASGI app: routes, errors as JSON, auth, body limits, lifespan.

    POST /v1/cascades/{name}/predict   GET /v1/cascades   POST /v1/admin/reload
    PUT|DELETE /v1/admin/cascades/{name}/variant   (attach a shadow or canary, detach it)
    GET /healthz   GET /readyz   GET /metrics   GET /openapi.json   GET /docs

Only this module turns errors into HTTP: every ``SkewguardError`` becomes
``{"code", "message", "field"?}`` with its status; anything else is a logged 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from skewguard.bentos.manifest import champion_names
from skewguard.bentos.variants import attach_variant, detach_variant, variant_of
from skewguard.errors import (
    AdminDisabledError,
    ClientDisconnectedError,
    ConfigError,
    InputError,
    SkewguardError,
    UnauthorizedError,
)
from skewguard.gateway.body import parse_body, read_body
from skewguard.gateway.canary import ROUTING_HEADER
from skewguard.gateway.cascades import CascadeRegistry, Served, describe, load_cascade, load_variant
from skewguard.gateway.features import FeatureSources
from skewguard.gateway.guard import GuardConfig
from skewguard.gateway.metrics import GatewayMetrics
from skewguard.gateway.openapi import SWAGGER_PAGE, openapi_document, swagger_assets
from skewguard.gateway.peers import Peers
from skewguard.gateway.predict import PredictOptions
from skewguard.gateway.predlog import PredictionLog
from skewguard.gateway.records import new_request_id
from skewguard.gateway.settings import GatewaySettings
from skewguard.gateway.shadow import ShadowQueue
from skewguard.gateway.variants import Answered, answer, shadow_job

logger = logging.getLogger("skewguard.gateway")
LOG_STATS_SECONDS = 1.0
"""Several workers: how often each publishes its prediction-log figures for the metrics."""


@dataclass(slots=True)
class Gateway:
    """The state the routes share."""

    settings: GatewaySettings
    registry: CascadeRegistry
    features: FeatureSources
    """Each cascade's online-feature source, made from its manifest on load."""
    log: PredictionLog
    metrics: GatewayMetrics
    options: PredictOptions
    guard_config: GuardConfig
    shadow: ShadowQueue
    """The bounded shadow work of every cascade with a shadow attached."""
    upstream: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)
    """The pooled client of the remote model runners (``SKEWGUARD_REMOTE_MODELS``)."""
    peers: Peers | None = None
    """With several workers: their readiness and reload announcements (``skewguard.gateway.peers``)."""
    behind: str | None = None
    """Why this replica may serve an older champion than the alias names (None: it follows)."""
    on_ready: Callable[[list[str]], None] | None = None
    """Called once the app has loaded its cascades and answers (``skewguard serve`` says so)."""

    def cascade_names(self) -> list[str]:
        """The cascades to serve: SKEWGUARD_CASCADES, else every one with a champion."""
        return self.settings.cascade_names or champion_names()

    async def reload(self) -> list[str]:
        """Load every champion and its variant anew (in a worker thread) and swap each pair in atomically."""
        loaded = []
        for name in self.cascade_names():
            served = await asyncio.to_thread(self.load, name)
            replaced = self.registry.swap(served)
            if replaced is not None:
                replaced.retire_unless_kept(served)
            loaded.append(str(served.champion.manifest.tag))
        await self.features.retain([m for served in self.registry.all_served() for m in served.manifests()])
        _freeze_heap()
        return loaded

    def load(self, name: str) -> Served:
        """The champion of ``name`` and the variant its alias names (blocking: run it in a thread)."""
        parts: dict[str, Any] = {
            "guard_config": self.guard_config,
            "features": self.features,
            "remote_urls": self.settings.remote_urls,
            "client": self.upstream,
        }
        champion = load_cascade(name, **parts)
        attached = variant_of(name)
        if attached is None:
            return Served(champion)
        variant = load_variant(attached, champion, **parts)
        if variant.problem is not None:
            logger.warning(
                "cascade %s: its %s %s is not served: %s", name, attached.mode, attached.tag, variant.problem
            )
        return Served(champion, variant)

    def preload(self) -> None:
        """Before a fork: import and set up what serving will, and keep nothing of it.

        The Feast store's modules and each champion loaded once and let go (onnxruntime's
        kernels and the model store's readers; a second copy of the sessions costs little),
        so the workers forked after it share those pages. A champion that does not load here
        is left to each worker's start-up, which reports it.
        """
        for name in self.cascade_names():
            with contextlib.suppress(SkewguardError):
                cascade = load_cascade(
                    name,
                    guard_config=self.guard_config,
                    remote_urls=self.settings.remote_urls,
                    client=self.upstream,
                )
                source = self.features.for_manifest(cascade.manifest)  # opens nothing until a read
                if source is not None:
                    source.preload()
                cascade.retire()


def _freeze_heap() -> None:
    """Move the long-lived start-up objects (thousands of modules, models) out of the GC's view.

    Full collections scanning them paused the event loop for tens of milliseconds each under
    load, which showed in the p99; frozen, the collections skip them.
    """
    gc.collect()
    gc.freeze()


class JSONBytes(Response):
    """A JSON response from bytes already encoded: the headers Starlette's ``Response`` would send
    (``content-length``, ``content-type: application/json``), set directly rather than worked out."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode()), _JSON_TYPE]


_JSON_TYPE = (b"content-type", b"application/json")


def json_response(body: Any, status: int = 200) -> Response:
    return JSONBytes(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status)


def error_response(exc: SkewguardError, gateway: Gateway | None = None) -> Response:
    if gateway is not None:
        gateway.metrics.child(gateway.metrics.errors, exc.code, str(exc.status_code)).inc()
    return json_response(exc.to_dict(), exc.status_code)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: at most ``limit`` bytes, bounded in depth and numbers (``gateway.body``)."""
    return parse_body(await read_body(request.stream(), request.headers.get("content-length"), limit))


def authorize(gateway: Gateway, request: Request, *, admin: bool = False) -> None:
    """Let the request through, or raise: a wrong or missing token (401), admin closed (403).

    With ``SKEWGUARD_API_TOKEN`` set, predict, the cascade list and admin need the header
    ``Authorization: Bearer <token>``, compared in constant time and exactly (scheme and case
    too). Whitespace around a header's value is not part of it in HTTP, and the server drops a
    trailing space before the app sees it, so it is dropped here too: the same answer in-process
    and behind uvicorn. Without a token, the admin endpoints answer 403.
    """
    token = gateway.settings.api_token
    if token is None:
        if admin:
            raise AdminDisabledError(
                "Admin endpoints are disabled on this gateway: set SKEWGUARD_API_TOKEN to enable them, "
                "and send 'Authorization: Bearer <token>'."
            )
        return
    sent = request.headers.get("authorization", "").strip(" \t")
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(sent.encode("latin-1"), expected.encode("latin-1")):
        what = "admin endpoints need" if admin else "this gateway needs"
        raise UnauthorizedError(f"Missing or wrong bearer token: {what} 'Authorization: Bearer <token>'.")


async def predict_route(request: Request) -> Response:
    return await _predict(request.app.state.gateway, request, request.path_params["name"])


async def _predict(gateway: Gateway, request: Request, name: str) -> Response:
    started = time.perf_counter()
    request_id = new_request_id()
    try:
        authorize(gateway, request)
        served = gateway.registry.served(name)  # champion and variant, fixed for this request
        body = await read_json(request, gateway.settings.max_body_bytes)
        gateway.shadow.inflight += 1  # the shadow runs only while few champion requests are in flight
        try:
            header = request.headers.get(ROUTING_HEADER)
            answered = await answer(
                served, body, gateway.options, request_id=request_id, routing_header=header
            )
        finally:
            gateway.shadow.inflight -= 1
    except ClientDisconnectedError as exc:  # nobody to answer: one counted line, no traceback
        logger.info("predict %s: %s", name, exc.message)
        return error_response(exc, gateway)
    except SkewguardError as exc:
        return error_response(exc, gateway)
    rows = answered.rows
    _observe(gateway, name, answered, rows, time.perf_counter() - started)
    records = answered.records(request_id)
    job = shadow_job(served, body, answered, records)
    if job is None:
        gateway.log.submit(records)
    else:
        gateway.shadow.submit(job)  # the champion's records are logged once the shadow ran (or was shed)
    return json_response({"cascade": name, "predictions": rows, "request_id": request_id})


def _observe(
    gateway: Gateway, name: str, answered: Answered, rows: list[dict[str, Any]], seconds: float
) -> None:
    routes = {row["route"] for row in rows}
    route = routes.pop() if len(routes) == 1 else "mixed"
    metrics = gateway.metrics
    metrics.child(metrics.latency, name, route).observe(seconds)
    for row in rows:
        metrics.child(metrics.rows, name, row["route"]).inc()
    for part in answered.parts:
        metrics.child(metrics.variant_rows, name, part.variant).inc(len(part.rows))
        for flags in part.outcome.flags:
            for flag in flags:
                metrics.child(metrics.skew_flags, name, flag.kind).inc()
        if part.candidate is not None:
            code = str(part.candidate["error"]).partition(":")[0]
            metrics.child(metrics.canary_fallbacks, name, code).inc()


async def list_route(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        authorize(gateway, request)
    except SkewguardError as exc:
        return error_response(exc, gateway)
    return json_response({"cascades": [describe(served) for served in gateway.registry.all_served()]})


async def reload_route(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        authorize(gateway, request, admin=True)
        loaded = await gateway.reload()
        if gateway.peers is not None:
            gateway.peers.announce_reload()
    except SkewguardError as exc:
        return error_response(exc, gateway)
    return json_response({"reloaded": loaded})


class VariantBody(BaseModel):
    """``PUT /v1/admin/cascades/{name}/variant``: ``{"mode": "shadow", "version": TAG, "fraction": 1.0}``
    or ``{"mode": "canary", "version": TAG, "share": 0.1}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["shadow", "canary"]
    version: str = Field(min_length=1)
    fraction: float | None = None
    share: float | None = None

    def amount(self) -> float:
        """The shadow's fraction (1.0 unless given) or the canary's share (required)."""
        wrong, given = ("share", self.share) if self.mode == "shadow" else ("fraction", self.fraction)
        if given is not None:
            right = "fraction" if self.mode == "shadow" else "share"
            raise InputError(f"A {self.mode} takes '{right}', not '{wrong}'.", field=wrong)
        if self.mode == "shadow":
            return 1.0 if self.fraction is None else self.fraction
        if self.share is None:
            raise InputError("A canary needs 'share': the share of routing keys it answers.", field="share")
        return self.share


def _variant_body(body: Any) -> VariantBody:
    try:
        return VariantBody.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InputError(f"Variant: {where}: {first['msg']}.", field=where) from None


async def variant_route(request: Request) -> Response:
    """Attach (PUT) or detach (DELETE) the variant of a served cascade; the cascade as then served."""
    gateway: Gateway = request.app.state.gateway
    name = request.path_params["name"]
    try:
        authorize(gateway, request, admin=True)
        gateway.registry.served(name)  # 404 unless served here
        if request.method == "DELETE":
            await asyncio.to_thread(detach_variant, name)
        else:
            wanted = _variant_body(await read_json(request, gateway.settings.max_body_bytes))
            try:
                await asyncio.to_thread(attach_variant, name, wanted.version, wanted.mode, wanted.amount())
            except ConfigError as exc:  # the operator's request is at fault, not the gateway's set-up
                raise InputError(exc.message, field=exc.field) from exc
        await gateway.reload()
        if gateway.peers is not None:
            gateway.peers.announce_reload()
        served = gateway.registry.served(name)
    except SkewguardError as exc:
        return error_response(exc, gateway)
    return json_response(describe(served))


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    problems = [
        f"cascade {n!r} not loaded"
        for n in gateway.settings.cascade_names
        if n not in gateway.registry.names()
    ]
    if not gateway.registry.names():
        problems.append("no cascade is served: none has a champion; train one with `skewguard train -f`")
    for source in gateway.features.all():
        try:
            await source.ping()
        except SkewguardError as exc:
            problems.append(exc.message)
    for found in await asyncio.gather(*(cascade.problems() for cascade in gateway.registry.all())):
        problems.extend(found)
    waiting = 0 if gateway.peers is None else gateway.peers.not_ready()
    if waiting:
        problems.append(f"{waiting} of {gateway.settings.workers} workers not ready yet")
    status = 503 if problems else 200
    body: dict[str, Any] = {"ready": not problems, "problems": problems}
    if gateway.behind is not None:  # still serving what it has: ready, but says why it may be stale
        body["behind"] = gateway.behind
    return json_response(body, status)


async def metrics_route(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")


async def openapi_route(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return json_response(openapi_document(gateway.registry.all()))


async def docs_route(request: Request) -> Response:
    return HTMLResponse(SWAGGER_PAGE)


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return json_response({"code": code, "message": f"{request.method} {request.url.path}: {exc}"}, status)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug's answer: a JSON 500, counted in ``skewguard_errors_total`` and logged with its traceback."""
    return internal_error(request.app.state.gateway, request, exc)


def internal_error(gateway: Gateway, request: Request, exc: Exception) -> Response:
    gateway.metrics.child(gateway.metrics.errors, "internal_error", "500").inc()
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response(
        {"code": "internal_error", "message": "An unexpected error; see the gateway log."}, 500
    )


async def _watch(gateway: Gateway) -> None:
    """Reload when a champion alias moves (a promotion) or another worker announced a reload.

    The alias may live in Redis or PostgreSQL: it is read in a thread, so a slow store never
    stalls requests. A store or export that fails leaves the served champion in place, and
    ``gateway.behind`` says so on ``/readyz`` and ``/metrics`` until a check succeeds.
    """
    while True:
        await asyncio.sleep(gateway.settings.watch_seconds)
        try:
            announced = gateway.peers is not None and gateway.peers.reload_announced()
            if announced or await asyncio.to_thread(_any_stale, gateway):
                await gateway.reload()
            _follows(gateway, None)
        except SkewguardError as exc:
            _follows(gateway, exc.message)
            logger.warning("still serving the previous champion: %s", exc.message)
        except Exception as exc:  # a failed reload must not end the watcher; logged with its traceback
            _follows(gateway, f"reloading failed: {exc!r}")
            logger.exception("reload after a promotion failed; still serving the previous version")


def _any_stale(gateway: Gateway) -> bool:
    return any(gateway.registry.is_stale(n) for n in gateway.cascade_names())


def _follows(gateway: Gateway, behind: str | None) -> None:
    """Record whether this replica follows the alias (``behind`` None) or why it may not."""
    if behind is not None:
        gateway.metrics.champion_follow_failures.inc()
    gateway.behind = behind
    gateway.metrics.champion_behind.set(0 if behind is None else 1)


async def _publish_log_stats(gateway: Gateway) -> None:
    """Several workers: keep this worker's prediction-log figures current for any scrape."""
    while True:
        await asyncio.sleep(LOG_STATS_SECONDS)
        gateway.metrics.publish_log_stats()


class PredictFastPath:
    """``POST /v1/cascades/{name}/predict`` straight to its handler; everything else to Starlette.

    Starlette's middleware stack and router sit under every predict request; skipping them
    saves a few percent of the server's CPU per request (docs/benchmarks.md). The answers are
    the same: the route's own errors are JSON from the handler, an unexpected one is the same
    logged JSON 500, and any other method or path (404, 405) is Starlette's, like the
    lifespan. The Starlette route stays in the table for those answers.
    """

    def __init__(self, app: Starlette, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = _predict_target(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await _predict(self.gateway, request, name)
        except Exception as exc:  # noqa: BLE001 - the same JSON 500 as every other route's
            response = internal_error(self.gateway, request, exc)
        await response(scope, receive, send)


_PREDICT_PREFIX, _PREDICT_SUFFIX = "/v1/cascades/", "/predict"


def _predict_target(scope: Scope) -> str | None:
    """The cascade name of a predict request (as the route's ``{name}`` matches it), else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if not (path.startswith(_PREDICT_PREFIX) and path.endswith(_PREDICT_SUFFIX)):
        return None
    name = path[len(_PREDICT_PREFIX) : -len(_PREDICT_SUFFIX)]
    return name if name and "/" not in name else None


def _routes() -> list[Route | Mount]:
    """The route table (predict is served by ``PredictFastPath`` first; its route answers 404/405)."""
    return [
        Route("/v1/cascades/{name}/predict", predict_route, methods=["POST"]),
        Route("/v1/cascades", list_route, methods=["GET"]),
        Route("/v1/admin/reload", reload_route, methods=["POST"]),
        Route("/v1/admin/cascades/{name}/variant", variant_route, methods=["PUT", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi_route, methods=["GET"]),
        Route("/docs", docs_route, methods=["GET"]),
        Mount("/docs/assets", StaticFiles(directory=swagger_assets()), name="swagger"),
    ]


def create_app(gateway: Gateway) -> PredictFastPath:
    """The ASGI app around a ``Gateway`` (whose parts the caller built)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.reload()
        for source in gateway.features.all():  # opens each store now rather than in the first request
            try:
                await source.ping()
            except SkewguardError as exc:
                logger.warning("online feature store not reachable at start-up: %s", exc.message)
        await gateway.log.start()
        _freeze_heap()
        gateway.metrics.watch_log(lambda: gateway.log.stats)
        if gateway.peers is not None:
            gateway.peers.reload_announced()  # what was announced before this worker started is loaded
            gateway.peers.mark_ready()
        tasks = [asyncio.create_task(_watch(gateway))] if gateway.settings.watch_seconds > 0 else []
        if gateway.on_ready is not None:
            gateway.on_ready(gateway.registry.names())
        if gateway.metrics.multiprocess_dir is not None:
            tasks.append(asyncio.create_task(_publish_log_stats(gateway)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if gateway.peers is not None:
                gateway.peers.unmark_ready()
            await gateway.shadow.drain()  # before the log: its copies' records are written there
            await gateway.log.drain()
            gateway.metrics.publish_log_stats()
            await gateway.features.close()
            await gateway.upstream.aclose()

    app = Starlette(
        routes=_routes(),
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected_error},
    )
    app.state.gateway = gateway
    return PredictFastPath(app, gateway)
