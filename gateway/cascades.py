"""Cascades being served: the champion of each name, loaded whole, swapped atomically.

A ``LoadedCascade`` is immutable: the manifest, its union input spec, a runner per model
and the skew guard. The ``CascadeRegistry`` maps names to them; a reload builds the new
cascade completely (files verified, sessions created) before one dict assignment makes it
visible, so a request holds either the old or the new cascade, never a mix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from skewguard.bentos.manifest import CascadeManifest, champion, champion_tag
from skewguard.bentos.runner import OnnxRunner
from skewguard.bentos.spec import InputSpec
from skewguard.bentos.store import StoredModel, load_model
from skewguard.errors import ConfigError, ModelNotFoundError
from skewguard.gateway.batching import CascadeRunner, GatheredCascade, LocalCascade, SequentialCascade
from skewguard.gateway.features import FeatureSource, FeatureSources
from skewguard.gateway.guard import GuardConfig, SkewGuard
from skewguard.gateway.runners import LocalRunner, ModelRunner, RemoteBentoRunner


@dataclass(frozen=True, slots=True)
class LoadedCascade:
    """Everything one request needs, fixed for the lifetime of this version."""

    manifest: CascadeManifest
    spec: InputSpec
    runner: CascadeRunner
    guard: SkewGuard
    request_fields: tuple[str, ...]
    """Fields the client sends: the spec's fields less the online features."""
    features: FeatureSource | None = None
    """Where its online features come from; None when it reads none."""
    remote: tuple[RemoteBentoRunner, ...] = ()
    """The models served by their own BentoML service (``SKEWGUARD_REMOTE_MODELS``)."""

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def versions(self) -> dict[str, str]:
        return {"cascade": str(self.manifest.tag), **self.manifest.model_tags()}

    async def problems(self) -> list[str]:
        """Why a remote model of this version cannot serve now (``/readyz``); none when co-located."""
        found = await asyncio.gather(*(runner.circuit.problem() for runner in self.remote))
        return [f"model {r.tag} at {r.url}: {why}" for r, why in zip(self.remote, found, strict=True) if why]

    def retire(self) -> None:
        """A reload replaced this version: its open circuits stop probing (requests in flight finish)."""
        for runner in self.remote:
            runner.circuit.retire()


def load_cascade(
    name: str,
    *,
    guard_config: GuardConfig,
    features: FeatureSources | None = None,
    remote_urls: Mapping[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> LoadedCascade:
    """The champion cascade of ``name``, its models local unless ``remote_urls`` names them."""
    manifest = champion(name)
    if manifest is None:
        raise ModelNotFoundError(
            f"No champion cascade named {name!r} in the model store; train one with `skewguard train -f`.",
            field="name",
        )
    spec = manifest.spec()
    models = {role: load_model(tag) for role, tag in manifest.model_tags().items()}  # each verified once
    online = {feature.name for feature in spec.online_features}
    runner, remote = _cascade_runner(manifest, models, remote_urls or {}, client)
    profiled = models["router"] if manifest.router else models[next(iter(manifest.branches))]
    return LoadedCascade(
        manifest=manifest,
        spec=spec,
        runner=runner,
        guard=SkewGuard(profiled.spec, profiled.profile, guard_config),
        request_fields=tuple(n for n in spec.names if n not in online),
        features=features.for_manifest(manifest) if features is not None else None,
        remote=remote,
    )


def _cascade_runner(
    manifest: CascadeManifest,
    models: Mapping[str, StoredModel],
    remote_urls: Mapping[str, str],
    client: httpx.AsyncClient | None,
) -> tuple[CascadeRunner, tuple[RemoteBentoRunner, ...]]:
    """The rows of concurrent requests gathered; all models local: in one thread, else model by model.

    Also the remote runners among them.
    """
    branches = {role: model for role, model in models.items() if role != "router"}
    routing = models.get("router")
    if not any(_url(model, remote_urls) for model in models.values()):
        onnx = {role: OnnxRunner(model) for role, model in branches.items()}
        router_onnx = OnnxRunner(routing) if routing is not None else None
        local = LocalCascade(manifest.name, manifest.router, router_onnx, onnx)
        return GatheredCascade(manifest.name, local), ()
    router = _runner(routing, remote_urls, client) if routing is not None else None
    runners = {role: _runner(model, remote_urls, client) for role, model in branches.items()}
    remote = tuple(r for r in (router, *runners.values()) if isinstance(r, RemoteBentoRunner))
    return GatheredCascade(manifest.name, SequentialCascade(manifest.router, router, runners)), remote


def _url(model: StoredModel, remote_urls: Mapping[str, str]) -> str | None:
    return remote_urls.get(model.name) or remote_urls.get(model.tag)


def _runner(
    model: StoredModel, remote_urls: Mapping[str, str], client: httpx.AsyncClient | None
) -> ModelRunner:
    url = _url(model, remote_urls)
    if url is None:
        return LocalRunner(model)
    if client is None:
        raise ConfigError(f"Model {model.tag} is configured as remote, but no HTTP client was given.")
    return RemoteBentoRunner(model.tag, url, client, model.spec.names)


class CascadeRegistry:
    """Name → the cascade being served. Reads are a dict lookup; swaps are one assignment."""

    def __init__(self) -> None:
        self._cascades: dict[str, LoadedCascade] = {}

    def get(self, name: str) -> LoadedCascade:
        cascade = self._cascades.get(name)
        if cascade is None:
            known = ", ".join(sorted(self._cascades)) or "none"
            raise ModelNotFoundError(f"No cascade {name!r} is served here (served: {known}).", field="name")
        return cascade

    def swap(self, cascade: LoadedCascade) -> LoadedCascade | None:
        """Serve ``cascade`` from now on; the version it replaced, if any."""
        replaced = self._cascades.get(cascade.name)
        self._cascades = {**self._cascades, cascade.name: cascade}
        return replaced

    def names(self) -> list[str]:
        return sorted(self._cascades)

    def all(self) -> list[LoadedCascade]:
        return [self._cascades[name] for name in self.names()]

    def is_stale(self, name: str) -> bool:
        """Whether the store's champion alias moved away from the version served."""
        served = self._cascades.get(name)
        return served is None or champion_tag(name) != served.manifest.tag


def describe(cascade: LoadedCascade) -> dict[str, Any]:
    """The JSON ``GET /v1/cascades`` lists per cascade."""
    manifest = cascade.manifest
    router = manifest.router
    return {
        "name": manifest.name,
        "version": manifest.tag,
        "status": manifest.status,
        "task": manifest.task,
        "created_at": manifest.created_at.isoformat(),
        "models": manifest.model_tags(),
        "routes": router.routes if router else None,
        "threshold": router.threshold if router else None,
        "entity_key": manifest.entity_key,
        "request_fields": list(cascade.request_fields),
        "online_features": manifest.feature_refs,
    }
