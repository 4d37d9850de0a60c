"""Cascades being served: the champion of each name and its variant, loaded whole, swapped atomically.

A ``LoadedCascade`` is immutable: the manifest, its union input spec, a runner per model
and the skew guard. A ``Served`` cascade is the champion and, when one is attached, its
``LoadedVariant`` (a candidate as a shadow or a canary, ``skewguard.bentos.variants``).
The ``CascadeRegistry`` maps names to them; a reload builds the new champion and variant
completely (files verified, sessions created) before one dict assignment makes them
visible, so a request holds either the old or the new pair, never a mix — a promotion or
a rollback is atomic for requests in flight.

A variant that does not load (its models missing, a remote service misnamed) never stops
its champion: the champion serves alone and ``GET /v1/cascades`` says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from skewguard.bentos.aliases import Variant, sharing
from skewguard.bentos.manifest import CascadeManifest, champion
from skewguard.bentos.runner import OnnxRunner
from skewguard.bentos.spec import InputSpec
from skewguard.bentos.store import StoredModel, load_model
from skewguard.bentos.variants import variant_manifest
from skewguard.errors import ConfigError, ModelNotFoundError, SkewguardError
from skewguard.gateway.batching import CascadeRunner, GatheredCascade, LocalCascade, SequentialCascade
from skewguard.gateway.features import FeatureBinding, FeatureSource, FeatureSources
from skewguard.gateway.guard import GuardConfig, SkewGuard
from skewguard.gateway.runners import LocalRunner, ModelRunner, RemoteBentoRunner


@dataclass(frozen=True, slots=True)
class LoadedCascade:
    """Everything one request needs, fixed for the lifetime of this version."""

    manifest: CascadeManifest
    spec: InputSpec
    runner: GatheredCascade
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


@dataclass(frozen=True, slots=True)
class LoadedVariant:
    """The candidate attached beside a champion, as the alias names it, and the cascade loaded for it."""

    spec: Variant
    cascade: LoadedCascade | None
    """None when it did not load: then ``problem`` says why, and the champion serves alone."""
    problem: str | None = None
    reads_same_features: bool = False
    """Whether it reads the champion's online features (a shadow then reuses the champion's read)."""


@dataclass(frozen=True, slots=True)
class Served:
    """One cascade as served: its champion and, when one is attached, its variant."""

    champion: LoadedCascade
    variant: LoadedVariant | None = None

    def manifests(self) -> list[CascadeManifest]:
        """The manifests in service (whose features must stay open)."""
        extra = self.variant.cascade if self.variant is not None else None
        return [self.champion.manifest, *([extra.manifest] if extra is not None else [])]

    def retire_unless_kept(self, kept: Served) -> None:
        """This pair was replaced by ``kept``: retire whatever of it ``kept`` does not serve any more."""
        mine = [self.champion, *([self.variant.cascade] if self.variant and self.variant.cascade else [])]
        theirs = {id(kept.champion), id(kept.variant.cascade if kept.variant else None)}
        for cascade in mine:
            if id(cascade) not in theirs:
                cascade.retire()


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
    return build_cascade(
        manifest, guard_config=guard_config, features=features, remote_urls=remote_urls, client=client
    )


def load_variant(
    variant: Variant,
    champion: LoadedCascade,
    *,
    guard_config: GuardConfig,
    features: FeatureSources | None = None,
    remote_urls: Mapping[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> LoadedVariant:
    """The candidate ``variant`` names, loaded beside ``champion``; a failure is kept, not raised."""
    if variant.champion != champion.manifest.tag:
        why = f"attached against {variant.champion}, but {champion.manifest.tag} is the champion now"
        return LoadedVariant(variant, None, why)
    try:
        manifest = variant_manifest(variant)
        urls = variant_remote_urls(remote_urls or {}, manifest, champion.manifest)
        cascade = build_cascade(
            manifest, guard_config=guard_config, features=features, remote_urls=urls, client=client
        )
    except SkewguardError as exc:
        return LoadedVariant(variant, None, exc.message)
    same = FeatureBinding.of(manifest) == FeatureBinding.of(champion.manifest)
    return LoadedVariant(variant, cascade, reads_same_features=same)


def variant_remote_urls(
    urls: Mapping[str, str], candidate: CascadeManifest, current: CascadeManifest
) -> dict[str, str]:
    """Which of the candidate's models run remote: those named by tag, and by name only when the
    champion serves that very tag too — a service named for a model serves the champion's version,
    and sending it the candidate's rows would compare the champion with itself."""
    shared = set(current.model_tags().values())
    remote = {}
    for tag in candidate.model_tags().values():
        name = tag.partition(":")[0]
        if tag in urls:
            remote[tag] = urls[tag]
        elif name in urls and tag in shared:
            remote[tag] = urls[name]
    return remote


def build_cascade(
    manifest: CascadeManifest,
    *,
    guard_config: GuardConfig,
    features: FeatureSources | None = None,
    remote_urls: Mapping[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> LoadedCascade:
    """The cascade of a verified ``manifest``: its models loaded (each checked), runners, guard, features."""
    spec = manifest.spec()
    models = {role: load_model(tag) for role, tag in manifest.model_tags().items()}  # each verified once
    online = {feature.name for feature in spec.online_features}
    profiled = models["router"] if manifest.router else models[next(iter(manifest.branches))]
    guard = SkewGuard(profiled.spec, profiled.profile, guard_config)
    inner, remote = _cascade_runner(manifest, models, remote_urls or {}, client)
    return LoadedCascade(
        manifest=manifest,
        spec=spec,
        runner=GatheredCascade(manifest.name, inner, guard=guard),
        guard=guard,
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
    """All models local: the cascade in one thread, else model by model; and the remote runners among them."""
    branches = {role: model for role, model in models.items() if role != "router"}
    routing = models.get("router")
    if not any(_url(model, remote_urls) for model in models.values()):
        onnx = {role: OnnxRunner(model) for role, model in branches.items()}
        router_onnx = OnnxRunner(routing) if routing is not None else None
        return LocalCascade(manifest.name, manifest.router, router_onnx, onnx), ()
    router = _runner(routing, remote_urls, client) if routing is not None else None
    runners = {role: _runner(model, remote_urls, client) for role, model in branches.items()}
    remote = tuple(r for r in (router, *runners.values()) if isinstance(r, RemoteBentoRunner))
    return SequentialCascade(manifest.router, router, runners), remote


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
        self._served: dict[str, Served] = {}

    def served(self, name: str) -> Served:
        """The champion of ``name`` and its variant; ModelNotFoundError when none is served here."""
        served = self._served.get(name)
        if served is None:
            known = ", ".join(sorted(self._served)) or "none"
            raise ModelNotFoundError(f"No cascade {name!r} is served here (served: {known}).", field="name")
        return served

    def get(self, name: str) -> LoadedCascade:
        """The champion of ``name``."""
        return self.served(name).champion

    def swap(self, served: Served | LoadedCascade) -> Served | None:
        """Serve ``served`` (a champion alone, or with its variant) from now on; the pair it replaced."""
        pair = served if isinstance(served, Served) else Served(served)
        replaced = self._served.get(pair.champion.name)
        self._served = {**self._served, pair.champion.name: pair}
        return replaced

    def names(self) -> list[str]:
        return sorted(self._served)

    def all(self) -> list[LoadedCascade]:
        """The champions served."""
        return [self._served[name].champion for name in self.names()]

    def all_served(self) -> list[Served]:
        return [self._served[name] for name in self.names()]

    def is_stale(self, name: str) -> bool:
        """Whether the store's alias moved away from what is served: another champion, or variant."""
        served = self._served.get(name)
        alias = sharing().aliases.get(name)
        if served is None or alias is None:
            return True
        attached = served.variant.spec if served.variant is not None else None
        return alias.champion != served.champion.manifest.tag or alias.variant != attached


def describe(served: Served | LoadedCascade) -> dict[str, Any]:
    """The JSON ``GET /v1/cascades`` lists per cascade: the champion, and its variant (or null)."""
    pair = served if isinstance(served, Served) else Served(served)
    return _describe_champion(pair.champion) | {"variant": _describe_variant(pair.variant)}


def _describe_variant(variant: LoadedVariant | None) -> dict[str, Any] | None:
    if variant is None:
        return None
    spec = variant.spec
    return {
        "mode": spec.mode,
        "version": spec.tag,
        ("fraction" if spec.mode == "shadow" else "share"): spec.fraction,
        "attached_at": spec.attached_at.isoformat(),
        "serving": variant.cascade is not None,
        "problem": variant.problem,
    }


def _describe_champion(cascade: LoadedCascade) -> dict[str, Any]:
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
