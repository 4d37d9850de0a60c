"""Benchmark variant (4), the naive way: Starlette calling the scikit-learn pipelines plus Feast.

    python bench/gateway_naive.py extract --storage PREFECT_STORAGE --training PARQUET --out FILE
    python bench/gateway_naive.py serve --pipelines FILE --port PORT [--cascade returns]

``extract`` recovers the fitted pipelines that ``skewguard train`` converted — the router
with its threshold and the two specialists — from that run's Prefect result store, so
both sides serve the very same models (those that read the image: a ``--no-image`` run's
results in the same store are another cascade's). Without those results it refits them on
the same training set the way ``skewguard.pipeline.flows`` does (out-of-fold routing, same heads and seed).
They are written as a pickle of this run's own making, read back only by ``serve``.

``serve`` answers ``POST /v1/cascades/{name}/predict`` with the gateway's body and answer
shape, the way a first version would: per request one Feast SDK call in the event loop, a
pandas frame with the image decoded, ``predict_proba`` of the router, then of the chosen
specialist. No validation beyond what pandas and scikit-learn do, no skew guard, no log.
"""

from __future__ import annotations

import argparse
import math
import pickle
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from returns_models import (
    ENTITY_KEY,
    IMAGE,
    ONLINE,
    TIMESTAMP,
    feature_columns,
    make_pipeline,
    split_by_time,
)

from skewguard.bentos.feature_store import FeastConfig, OnlineFeatureReader
from skewguard.bentos.images import decode_base64_image, decode_image
from skewguard.pipeline.cascade import (
    NEGATIVE_BRANCH,
    POSITIVE_BRANCH,
    ROUTER_TARGET,
    TARGET,
    Threshold,
    fit_router,
    fit_specialists,
    out_of_fold_proba,
    route,
)
from skewguard.settings import Settings

Models = dict[str, Any]


def extract(storage: Path, training: Path) -> Models:
    """The train run's own fitted pipelines when its results hold exactly one set, else a refit."""
    found = _from_prefect_results(storage)
    return found if found is not None else _refit(training)


def _from_prefect_results(storage: Path) -> Models | None:
    from prefect.results import ResultRecord  # type: ignore[attr-defined]  # re-exported, not in __all__

    routers: list[tuple[Any, Threshold]] = []
    specialists: list[dict[str, Any]] = []
    for path in sorted(storage.iterdir()) if storage.is_dir() else []:
        try:
            value: Any = ResultRecord.deserialize(path.read_bytes()).result
        except (ValueError, TypeError, pickle.UnpicklingError):
            continue
        is_router = isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Threshold)
        is_branches = isinstance(value, dict) and set(value) == {POSITIVE_BRANCH, NEGATIVE_BRANCH}
        if is_router and _reads_image(value[0]):
            routers.append(value)
        elif is_branches and all(_reads_image(model) for model in value.values()):
            specialists.append(value)
    if len(routers) != 1 or len(specialists) != 1:
        return None
    (router, threshold), (branches,) = routers[0], specialists
    return {
        "router": router,
        "threshold": threshold.value,
        "specialists": branches,
        "source": "the fitted pipelines of the `skewguard train` run (its Prefect results)",
    }


def _reads_image(model: Any) -> bool:
    """Whether a fitted pipeline was fitted with the image column (not a ``--no-image`` one)."""
    return IMAGE in getattr(model, "feature_names_in_", ())


def _refit(training: Path) -> Models:
    frame = pd.read_parquet(training)
    frame[IMAGE] = [decode_image(png) for png in frame[IMAGE]]
    train, _ = split_by_time(frame)
    X = train[feature_columns()]
    factory = partial(make_pipeline, "hgb", seed=0)
    oof = out_of_fold_proba(factory, X, train[ROUTER_TARGET], 5)
    router, chosen = fit_router(X, train[ROUTER_TARGET], factory=factory, oof_proba=oof)
    branches = fit_specialists(X, train[TARGET], route(oof, chosen.value), factory=factory)
    return {
        "router": router,
        "threshold": chosen.value,
        "specialists": dict(branches),
        "source": "refitted on the run's training set as skewguard.pipeline.flows does",
    }


def frame_of(
    rows: Sequence[dict[str, Any]], online: Sequence[dict[str, float | None] | None]
) -> pd.DataFrame:
    """The pipelines' input: request fields, fetched features (NaN when missing), decoded images."""
    columns: dict[str, list[Any]] = {name: [] for name in feature_columns()}
    for row, features in zip(rows, online, strict=True):
        for name in columns:
            if name in ONLINE:
                value = None if features is None else features.get(name)
                columns[name].append(math.nan if value is None else value)
            elif name == IMAGE:
                columns[name].append(decode_base64_image(row[IMAGE]))
            else:
                columns[name].append(row.get(name))
    frame = pd.DataFrame(columns)
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


def create_app(models: Models, cascade: str) -> Any:
    """The naive Starlette app around the fitted pipelines and a Feast reader."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    reader = OnlineFeatureReader(FeastConfig.from_settings(Settings.from_env()))
    router, threshold, specialists = models["router"], models["threshold"], models["specialists"]

    async def predict(request: Request) -> JSONResponse:
        rows = (await request.json())["rows"]
        X = frame_of(rows, reader.read([row[ENTITY_KEY] for row in rows]))  # blocks the event loop
        p_router = router.predict_proba(X)[:, 1]
        routed = p_router >= threshold
        answers: list[dict[str, Any]] = [{} for _ in rows]
        for branch, mask in ((POSITIVE_BRANCH, routed), (NEGATIVE_BRANCH, ~routed)):
            if not mask.any():
                continue
            model = specialists[branch]
            proba = model.predict_proba(X[mask])
            for i, p in zip(np.flatnonzero(mask).tolist(), proba, strict=True):
                answers[i] = {
                    "prediction": model.classes_[int(p.argmax())].item(),
                    "probabilities": {str(c): float(v) for c, v in zip(model.classes_, p, strict=True)},
                    "route": branch,
                    "router_probability": float(p_router[i]),
                }
        return JSONResponse({"cascade": request.path_params["name"], "predictions": answers})

    async def healthz(request: Request) -> JSONResponse:
        reader.read([-1])  # opens the online store before the first request
        return JSONResponse({"status": "ok", "cascade": cascade})

    return Starlette(
        routes=[
            Route("/v1/cascades/{name}/predict", predict, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    pull = commands.add_parser("extract", help="write the fitted pipelines to --out")
    pull.add_argument("--storage", type=Path, required=True, help="PREFECT_HOME/storage of the train run")
    pull.add_argument("--training", type=Path, required=True, help="the run's training-set parquet")
    pull.add_argument("--out", type=Path, required=True)
    serve = commands.add_parser("serve", help="serve the pipelines with uvicorn")
    serve.add_argument("--pipelines", type=Path, required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--cascade", default="returns")
    args = parser.parse_args(argv)
    if args.command == "extract":
        models = extract(args.storage, args.training)
        args.out.write_bytes(pickle.dumps(models))
        print(models["source"])
        return 0
    import uvicorn

    models = pickle.loads(args.pipelines.read_bytes())  # noqa: S301  # written by `extract` in this run
    uvicorn.run(
        create_app(models, args.cascade),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
