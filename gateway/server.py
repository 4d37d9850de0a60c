"""Building and running the gateway process: settings → parts → app → uvicorn."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from skewguard.errors import ConfigError
from skewguard.gateway.app import Gateway, PredictFastPath, create_app
from skewguard.gateway.cascades import CascadeRegistry
from skewguard.gateway.features import FeatureSource, FeatureSources
from skewguard.gateway.guard import GuardConfig
from skewguard.gateway.metrics import GatewayMetrics
from skewguard.gateway.peers import Peers
from skewguard.gateway.predict import PredictOptions
from skewguard.gateway.predlog import PredictionLog
from skewguard.gateway.protocol import http_protocol
from skewguard.gateway.settings import GatewaySettings
from skewguard.gateway.shadow import ShadowQueue


def build_gateway(
    settings: GatewaySettings,
    *,
    features: FeatureSource | None = None,
    metrics_dir: Path | None = None,
    on_ready: Callable[[list[str]], None] | None = None,
) -> Gateway:
    """All parts from the settings; ``features`` answers every cascade's features instead of Feast (tests).

    ``metrics_dir``: the folder several workers share (their metric files, readiness, reloads).
    ``on_ready``: called with the served cascades' names once the app answers.
    """
    log = PredictionLog.open(
        settings.prediction_log_url,
        max_queue=settings.log_queue,
        retention_seconds=settings.log_retention_seconds,
    )
    metrics = GatewayMetrics(multiprocess_dir=metrics_dir)
    options = PredictOptions(
        max_rows=settings.max_rows,
        degrade_on_feature_store_error=settings.on_feature_store_error == "degrade",
        budget_seconds=settings.request_budget_ms / 1000,
        max_request_pixels=settings.max_request_pixels,
    )
    return Gateway(
        settings=settings,
        registry=CascadeRegistry(),
        features=FeatureSources.fixed(features) if features is not None else FeatureSources.feast(settings),
        log=log,
        metrics=metrics,
        options=options,
        guard_config=GuardConfig.from_strings(
            reject=settings.guard_reject, range_quantiles=settings.guard_range_quantiles
        ),
        shadow=ShadowQueue(
            log,
            metrics,
            options,
            max_queue=settings.shadow_queue,
            concurrency=settings.shadow_concurrency,
            max_wait_s=settings.request_budget_ms / 1000,
            max_load=settings.shadow_max_load,
            max_inflight=settings.shadow_max_inflight,
        ),
        peers=None if metrics_dir is None else Peers(metrics_dir, settings.workers),
        on_ready=on_ready,
    )


def serve(settings: GatewaySettings, *, announce: Callable[[list[str]], None] | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT (then drain the prediction log).

    One worker: uvicorn in this process. Several: gunicorn's master here, forking them. Either way
    the HTTP protocol limits each request's head in size and time (``gateway.protocol``).
    ``announce`` is called with the served cascades once the gateway answers (one process).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call otherwise
    if settings.workers > 1:
        if announce is not None:
            print(
                f"starting {settings.workers} gateway workers; GET /readyz answers 200 once every one serves"
            )
        _serve_workers(settings)
        return
    app = create_app(build_gateway(settings, on_ready=announce))
    uvicorn.run(app, **uvicorn_options(settings))


def uvicorn_options(settings: GatewaySettings) -> dict[str, Any]:
    """How one gateway process runs uvicorn (the benchmark's bare app runs the same way)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "access_log": False,
        # The gateway reads no client address or scheme, so X-Forwarded-* would change nothing;
        # uvicorn's middleware for them sat under every request.
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
        "http": http_protocol(settings.max_header_bytes, settings.header_timeout_seconds),
    }


def _serve_workers(settings: GatewaySettings) -> None:
    from skewguard.gateway.workers import GatewayProcesses, enable_multiprocess_metrics

    if settings.watch_seconds <= 0:
        raise ConfigError(
            "SKEWGUARD_WORKERS > 1 needs SKEWGUARD_WATCH_SECONDS > 0: the other workers follow an "
            "admin reload, and a promotion, through their watcher.",
            field="SKEWGUARD_WATCH_SECONDS",
        )
    metrics_dir = enable_multiprocess_metrics()

    def load() -> PredictFastPath:  # in the master, before the fork: what it imports, the workers share
        gateway = build_gateway(settings, metrics_dir=metrics_dir)
        gateway.preload()
        return create_app(gateway)

    GatewayProcesses(settings, load, metrics_dir).run()
