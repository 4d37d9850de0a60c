"""Benchmark variant (4), the naive way: Starlette calling the scikit-learn pipelines plus Feast.

    python bench/gateway_naive.py extract --storage PREFECT_STORAGE --training PARQUET --out FILE
    python bench/gateway_naive.py serve --pipelines FILE --port PORT [--cascade returns]

``extract`` recovers the fitted pipelines that ``skewguard train`` converted — the router
and the two specialists — from that run's Prefect result store, so both sides serve the very
same models (those that read the image: the tabular+text cascade's results in the same store
are another cascade's); the routing rule comes from the champion's manifest. Without those
results it refits them on the same training set the way ``skewguard.pipeline.flows`` does
(out-of-fold routing, same pipelines). They are written as a pickle of this run's own
making, read back only by ``serve``.

``serve`` answers ``POST /v1/cascades/{name}/predict`` with the gateway's body and answer
shape, the way a first version would: per request one Feast SDK call in the event loop, a
pandas frame with the image decoded, ``predict_proba`` of the router, then of the chosen
specialist. No validation beyond what pandas and scikit-learn do, no skew guard, no log.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/gateway_naive.py`: bench (and the example) from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    import bench  # noqa: F401 - puts the returns example's modules on the path

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

from skewguard.bentos.images import decode_base64_image, decode_image
from skewguard.bentos.manifest import RouterRef, champion
from skewguard.featurestore.connection import FeastConfig
from skewguard.featurestore.online import OnlineFeatureReader
from skewguard.pipeline.cascade import RoutingRule, fit_branches, out_of_fold_proba
from skewguard.settings import Settings

Models = dict[str, Any]
BRANCHES = ("reseller", "retail")


def extract(storage: Path, training: Path, cascade: str) -> Models:
    """The train run's own fitted pipelines when its results hold exactly one set, else a refit."""
    manifest = champion(cascade)
    if manifest is None or manifest.router is None:
        raise SystemExit(f"no champion cascade {cascade!r} with a router; run `skewguard train -f` first")
    found = _from_prefect_results(storage)
    models = found if found is not None else _refit(training, manifest.router)
    return models | {"rule": manifest.router.model_dump(), "feature_project": manifest.feature_project}


def _from_prefect_results(storage: Path) -> Models | None:
    from prefect.results import ResultRecord  # type: ignore[attr-defined]  # re-exported, not in __all__

    routers: list[Any] = []
    specialists: list[dict[str, Any]] = []
    for path in sorted(storage.iterdir()) if storage.is_dir() else []:
        try:
            value: Any = ResultRecord.deserialize(path.read_bytes()).result
        except (ValueError, TypeError, pickle.UnpicklingError):
            continue
        if hasattr(value, "predict_proba") and _reads_image(value) and _learned(value) == {0, 1}:
            routers.append(value)
        elif (
            isinstance(value, dict) and set(value) == set(BRANCHES) and all(map(_reads_image, value.values()))
        ):
            specialists.append(value)
    if len(routers) != 1 or len(specialists) != 1:  # the router and the monolithic baseline look alike
        return None
    return {
        "router": routers[0],
        "specialists": specialists[0],
        "source": "the fitted pipelines of the `skewguard train` run (its Prefect results)",
    }


def _learned(model: Any) -> set[Any]:
    return {c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", ())}


def _reads_image(model: Any) -> bool:
    """Whether a fitted pipeline was fitted with the image column (not a tabular+text one)."""
    return IMAGE in getattr(model, "feature_names_in_", ())


def _refit(training: Path, rule: RouterRef) -> Models:
    frame = pd.read_parquet(training)
    frame[IMAGE] = [decode_image(png) for png in frame[IMAGE]]
    train, _ = split_by_time(frame)
    X = train[feature_columns()]
    factory = partial(make_pipeline, "hgb", seed=0)
    oof = out_of_fold_proba(factory, X, train["is_reseller"], train[TIMESTAMP], 5)
    routed = RoutingRule(rule.routes, rule.threshold, rule.positive_class).assign(*oof)
    targets = dict.fromkeys(BRANCHES, train["returned"])
    branches = fit_branches(X, targets, routed, dict.fromkeys(BRANCHES, factory), "classification")
    return {
        "router": factory().fit(X, train["is_reseller"]),
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

    refs = {name: f"customer_stats:{name}" for name in ONLINE}
    config = FeastConfig.for_project(Settings.from_env(), models["feature_project"])
    reader = OnlineFeatureReader(config, entity_key=ENTITY_KEY, refs=refs)
    rule = RouterRef.model_validate(models["rule"])
    router, specialists = models["router"], models["specialists"]

    async def predict(request: Request) -> JSONResponse:
        rows = (await request.json())["rows"]
        online = reader.read([row[ENTITY_KEY] for row in rows])  # blocks the event loop
        X = frame_of(rows, [None if found is None else found.values for found in online])
        proba = router.predict_proba(X)
        chosen = [
            rule.choose({str(c): float(p) for c, p in zip(router.classes_, row, strict=True)})
            for row in proba
        ]
        answers: list[dict[str, Any]] = [{} for _ in rows]
        for branch in BRANCHES:
            mask = np.array([route == branch for route, _ in chosen])
            if not mask.any():
                continue
            model = specialists[branch]
            proba = model.predict_proba(X[mask])
            for i, p in zip(np.flatnonzero(mask).tolist(), proba, strict=True):
                answers[i] = {
                    "prediction": model.classes_[int(p.argmax())].item(),
                    "probabilities": {str(c): float(v) for c, v in zip(model.classes_, p, strict=True)},
                    "route": branch,
                    "router_probability": chosen[i][1],
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
    pull.add_argument("--cascade", default="returns")
    serve = commands.add_parser("serve", help="serve the pipelines with uvicorn")
    serve.add_argument("--pipelines", type=Path, required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--cascade", default="returns")
    args = parser.parse_args(argv)
    if args.command == "extract":
        models = extract(args.storage, args.training, args.cascade)
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
