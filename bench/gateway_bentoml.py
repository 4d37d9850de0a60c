"""Benchmark variant (3): the cascade composed the BentoML way; and the Bentos of variant (2).

    python bench/gateway_bentoml.py build [--cascade returns]    # prints one JSON line
    bentoml serve gateway_bentoml:CascadeService --working-dir bench

``build`` reads the champion cascade from the model store and builds one Bento per model
with ``skewguard.bentos.bento.build_bento`` (what variant (2) serves with ``bentoml serve``); it
prints the model tags, names, Bento tags, threshold and branch names.

The services: three model services run the stored ONNX graphs with
``skewguard.bentos.runner.OnnxRunner`` (validation included, as in ``skewguard.bentos.service``);
``CascadeService`` depends on them with ``bentoml.depends``, so ``bentoml serve`` starts
all four and connects them. Per request it reads the rows' online features from Feast (one
SDK call, in one worker thread: SQLite's connection is not shared across threads), calls
the router, then the chosen specialist. No skew guard, no prediction log. Model tags come
from ``SKEWGUARD_BENCH_<ROLE>`` (default ``returns-<role>:latest``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bentoml

from skewguard.bentos.manifest import champion
from skewguard.bentos.runner import OnnxRunner
from skewguard.bentos.store import load_model
from skewguard.featurestore.connection import FeastConfig
from skewguard.featurestore.online import OnlineFeatureReader
from skewguard.settings import Settings

CASCADE_ENV = "SKEWGUARD_BENCH_CASCADE"


def _tag(role: str) -> str:
    return os.environ.get(f"SKEWGUARD_BENCH_{role.upper()}", f"returns-{role}:latest")


class _ModelService:
    """One stored ONNX graph behind ``POST /predict {"rows": [...]}`` (its subclasses name the model)."""

    model: Any

    def __init__(self) -> None:
        self.runner = OnnxRunner(load_model(str(self.model.tag)))

    @bentoml.api  # type: ignore[untyped-decorator]  # _bentoml_sdk ships no type information
    async def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.runner.predict_rows(rows)


@bentoml.service(name="bench_router")
class RouterModel(_ModelService):
    model = bentoml.models.BentoModel(_tag("router"))


@bentoml.service(name="bench_reseller")
class ResellerModel(_ModelService):
    model = bentoml.models.BentoModel(_tag("reseller"))


@bentoml.service(name="bench_retail")
class RetailModel(_ModelService):
    model = bentoml.models.BentoModel(_tag("retail"))


@bentoml.service(name="bench_cascade")
class CascadeService:
    """The gateway, BentoML-composed: Feast, then router, then the chosen specialist."""

    router = bentoml.depends(RouterModel)
    reseller = bentoml.depends(ResellerModel)
    retail = bentoml.depends(RetailModel)

    def __init__(self) -> None:
        manifest = champion(os.environ.get(CASCADE_ENV, "returns"))
        if manifest is None or manifest.router is None or manifest.feature_project is None:
            raise RuntimeError(
                "no champion returns cascade in the model store; run `skewguard train -f` first"
            )
        if set(manifest.branches) != {"reseller", "retail"}:
            raise RuntimeError(f"expected the branches reseller and retail, got {sorted(manifest.branches)}")
        self.rule = manifest.router
        self.entity_key = manifest.entity_key or "customer_id"
        config = FeastConfig.for_project(Settings.from_env(), manifest.feature_project)
        self.reader = OnlineFeatureReader(config, entity_key=self.entity_key, refs=manifest.feature_refs)
        self.feast = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast")

    @bentoml.api  # type: ignore[untyped-decorator]
    async def predict(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [row[self.entity_key] for row in rows]
        online = await asyncio.get_running_loop().run_in_executor(self.feast, self.reader.read, ids)
        merged = [{**row, **(found.values if found else {})} for row, found in zip(rows, online, strict=True)]
        routed = await self.router.predict(rows=merged)
        answers: list[dict[str, Any]] = []
        for row, verdict in zip(merged, routed, strict=True):
            branch, p_router = self.rule.choose(verdict["probabilities"])
            (answer,) = await getattr(self, branch).predict(rows=[row])
            answers.append(
                {
                    "prediction": answer["label"],
                    "probabilities": answer["probabilities"],
                    "route": branch,
                    "router_probability": p_router,
                }
            )
        return {"predictions": answers}


def build(cascade: str) -> dict[str, Any]:
    """Bentos for the champion's models, and what the benchmark needs to know about it."""
    from skewguard.bentos.bento import build_bento

    manifest = champion(cascade)
    if manifest is None or manifest.router is None:
        raise SystemExit(f"no champion cascade {cascade!r} with a router; run `skewguard train -f`")
    models = {}
    for role, tag in manifest.model_tags().items():
        stored = load_model(tag)
        models[role] = {"tag": stored.tag, "name": stored.name, "bento": build_bento(stored.tag)}
    return {
        "cascade": str(manifest.tag),
        "threshold": manifest.router.threshold,
        "branches": list(manifest.router.branches),
        "models": models,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=("build",))
    parser.add_argument("--cascade", default="returns")
    args = parser.parse_args(argv)
    print(json.dumps(build(args.cascade)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
