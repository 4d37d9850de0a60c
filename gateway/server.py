"""Building and running the gateway process: settings → parts → app → uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from bentos.feature_store import FeastConfig
from gateway.app import Gateway, create_app
from gateway.cascades import CascadeRegistry
from gateway.features import FeastFeatureSource, FeatureSource
from gateway.guard import GuardConfig
from gateway.metrics import GatewayMetrics
from gateway.predict import PredictOptions
from gateway.predlog import PredictionLog
from gateway.settings import GatewaySettings


def build_gateway(settings: GatewaySettings, *, features: FeatureSource | None = None) -> Gateway:
    """All parts from the settings; ``features`` replaces the Feast source (tests)."""
    return Gateway(
        settings=settings,
        registry=CascadeRegistry(),
        features=features or FeastFeatureSource(FeastConfig.from_settings(settings)),
        log=PredictionLog.open(settings.prediction_log_url, max_queue=settings.log_queue),
        metrics=GatewayMetrics(),
        options=PredictOptions(
            max_rows=settings.max_rows,
            degrade_on_feature_store_error=settings.on_feature_store_error == "degrade",
            budget_seconds=settings.request_budget_ms / 1000,
        ),
        guard_config=GuardConfig.from_strings(
            reject=settings.guard_reject, range_quantiles=settings.guard_range_quantiles
        ),
    )


def serve(settings: GatewaySettings) -> None:
    """Run the gateway under uvicorn until SIGTERM/SIGINT (then drain the prediction log)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call otherwise
    app = create_app(build_gateway(settings))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
