"""The ``train_cascade`` Prefect flow: data → features → training set → cascade → store.

Each step is a task. The expensive ones are cached on their inputs and their own source
(``INPUTS + TASK_SOURCE``) with persisted results, so a second run with the same data and
parameters reuses them, and a changed parameter reruns only the tasks that depend on it.
Inputs are light keys — the data's sha256, the training set's path, parameters — so the
cache keys stay cheap to compute; fitted models travel with a key naming what produced
them, and their pickles (not byte-stable across a save and load) are left out of the
hash. Steps that touch outside state (the data files, the online store, the manifest and
its alias) always run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from prefect import flow, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from skewguard.bentos.images import decode_image
from skewguard.bentos.manifest import champion_tag, compose_manifest, promote, save_manifest
from skewguard.bentos.package import package_model, packaging_fingerprint
from skewguard.bentos.store import has_model
from skewguard.pipeline import cascade
from skewguard.pipeline.demo_data import FILES, generate_demo_data, load_demo_data, write_demo_data
from skewguard.pipeline.features import (
    FEATURE_REFS,
    FeastConfig,
    apply_features,
    historical_features,
    latest_event_time,
    materialize_features,
)
from skewguard.pipeline.returns_model import (
    ENTITY_KEY,
    IMAGE,
    ONLINE,
    Head,
    feature_columns,
    make_pipeline,
    split_by_time,
)
from skewguard.settings import Settings

CACHED: dict[str, Any] = {"cache_policy": INPUTS + TASK_SOURCE, "persist_result": True}
MODELS_KEYED: dict[str, Any] = {
    "cache_policy": (INPUTS - "model" - "router" - "specialists" - "baselines") + TASK_SOURCE,
    "persist_result": True,
}
MAX_GATE_ROWS = 2_000
HOLDOUT = 0.2  # the newest share of the labeled rows, held out of fitting (split_by_time)


@task(cache_policy=NO_CACHE)
def prepare_data(data_dir: str, n_orders: int, n_customers: int, seed: int) -> str:
    """Generate the demo data unless present; return the sha256 of the data files."""
    folder = Path(data_dir)
    if not all((folder / file).exists() for file in FILES.values()):
        print(f"generating demo data ({n_orders} orders) in {folder}")
        write_demo_data(generate_demo_data(n_orders=n_orders, n_customers=n_customers, seed=seed), folder)
    digest = hashlib.sha256()
    for file in sorted(FILES.values()):
        digest.update((folder / file).read_bytes())
    return digest.hexdigest()


@task(cache_policy=NO_CACHE)
def sync_features(fingerprint: str, feast: FeastConfig) -> str:
    """Register the feature definitions and materialize the latest values online."""
    apply_features(feast)
    done = materialize_features(feast, end=latest_event_time(feast))
    return f"{done.feature_view} → {done.online_store} as of {done.end:%Y-%m-%d %H:%M}"


@task(**CACHED)
def build_training_set(fingerprint: str, feast: FeastConfig, out_dir: str) -> str:
    """Orders joined point-in-time with their customer's features (Feast), as parquet."""
    orders = load_demo_data(feast.data_dir).orders
    frame = historical_features(feast, orders, timestamp_column="order_ts")
    path = Path(out_dir) / f"training-{fingerprint[:16]}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    expired = int(frame[list(ONLINE)].isna().any(axis=1).sum())
    print(f"training set: {len(frame)} rows, {expired} without fresh customer features")
    return str(path)


def load_training_set(path: str, image: bool = True) -> pd.DataFrame:
    """The training set with images decoded, or without them (not a task: cheap, never cached twice)."""
    frame = pd.read_parquet(path)
    if not image:
        return frame.drop(columns=[IMAGE])
    frame[IMAGE] = [decode_image(png) for png in frame[IMAGE]]
    return frame


@task(**CACHED)
def router_out_of_fold(
    training_path: str, head: Head, seed: int, n_splits: int, image: bool
) -> NDArray[np.float64]:
    """The router's out-of-fold P(reseller) on every training row (time-ordered folds)."""
    train, _ = split_by_time(load_training_set(training_path, image))
    X = train[feature_columns(image=image)]
    oof = cascade.out_of_fold_proba(_factory(head, seed, image), X, train[cascade.ROUTER_TARGET], n_splits)
    return np.ascontiguousarray(oof)  # hashes the same as its reloaded copy downstream


@task(**CACHED)
def fit_router(
    training_path: str,
    head: Head,
    seed: int,
    threshold: cascade.ThresholdChoice,
    oof: NDArray[np.float64],
    image: bool,
) -> tuple[Any, cascade.Threshold]:
    """The router on all training rows, and its routing threshold with the reason."""
    train, _ = split_by_time(load_training_set(training_path, image))
    return cascade.fit_router(
        train[feature_columns(image=image)],
        train[cascade.ROUTER_TARGET],
        factory=_factory(head, seed, image),
        threshold=threshold,
        oof_proba=oof,
    )


@task(**CACHED)
def fit_specialists(
    training_path: str, head: Head, seed: int, routed: NDArray[np.bool_], image: bool
) -> dict[str, Any]:
    """One specialist per branch, each on the rows the router's out-of-fold routing sends it."""
    train, _ = split_by_time(load_training_set(training_path, image))
    return cascade.fit_specialists(
        train[feature_columns(image=image)],
        train[cascade.TARGET],
        routed,
        factory=_factory(head, seed, image),
    )


@task(**CACHED)
def fit_baselines(training_path: str, head: Head, seed: int, image: bool) -> tuple[Any, dict[str, Any]]:
    """The comparisons: one monolithic model, and specialists split by the true label."""
    train, _ = split_by_time(load_training_set(training_path, image))
    X, y = train[feature_columns(image=image)], train[cascade.TARGET]
    monolithic = _factory(head, seed, image)().fit(X, y)
    true_split = train[cascade.ROUTER_TARGET].to_numpy() == 1
    return monolithic, cascade.fit_specialists(X, y, true_split, factory=_factory(head, seed, image))


@task(**MODELS_KEYED)
def evaluate_cascade(
    training_path: str,
    models_key: str,
    router: Any,
    threshold: float,
    specialists: dict[str, Any],
    baselines: tuple[Any, dict[str, Any]],
    image: bool,
) -> dict[str, Any]:
    """Figures on the held-out time slice: cascade, monolithic, true-label cascade."""
    _, holdout = split_by_time(load_training_set(training_path, image))
    monolithic, true_label = baselines
    figures = cascade.evaluate(
        router,
        threshold,
        specialists,
        holdout,
        monolithic=monolithic,
        true_label_specialists=true_label,
        columns=feature_columns(image=image),
    )
    return figures.to_dict()


@task(**MODELS_KEYED)
def package(
    name: str,
    models_key: str,
    packaging: str,
    model: Any,
    training_path: str,
    role: str,
    router: Any,
    threshold: float,
    store: str,
    image: bool,
) -> str:
    """Convert and gate one model on the held-out rows it will see; return its store tag.

    ``packaging`` (``packaging_fingerprint()``) is only a cache key: the task's own source is
    in the key already, but the converter, the gate and the store it calls are not.

    Without ``image`` the rows carry no image column, so the graph and its input spec have none.
    """
    train, holdout = split_by_time(load_training_set(training_path, image))
    target = cascade.ROUTER_TARGET if role == "router" else cascade.TARGET
    columns = feature_columns(image=image)
    train, holdout = (_rows_for(role, rows, router, threshold, columns) for rows in (train, holdout))
    sample = holdout.iloc[:MAX_GATE_ROWS]
    return package_model(
        model,
        sample[columns],
        name=name,
        y_sample=sample[target].to_numpy(),
        X_profile=train[columns],
        entity_key=ENTITY_KEY,
        online_features=dict(zip(ONLINE, FEATURE_REFS, strict=True)),
        labels={"role": role, "target": target},
    )


@task(cache_policy=NO_CACHE)
def write_manifest(
    name: str,
    router_tag: str,
    threshold: cascade.Threshold,
    branches: dict[str, str],
    metrics: dict[str, Any],
) -> tuple[str, str]:
    """Store the cascade manifest; the first cascade of a name becomes its champion."""
    manifest = compose_manifest(
        name,
        router_tag=router_tag,
        threshold=threshold.value,
        branches=branches,
        metrics=metrics,
        threshold_reason=threshold.reason,
    )
    tag = save_manifest(manifest)
    if champion_tag(name) is None:
        promote(tag)
        return tag, "champion"
    return tag, "candidate"


@flow(name="train_cascade", log_prints=True)
def train_cascade(
    name: str = "returns",
    *,
    n_orders: int = 20_000,
    n_customers: int = 2_000,
    seed: int = 0,
    head: Head = "hgb",
    router_head: Head | None = None,
    threshold: cascade.ThresholdChoice = cascade.DEFAULT_THRESHOLD,
    n_splits: int = 5,
    image: bool = True,
) -> dict[str, Any]:
    """Train, gate, store and evaluate the cascade as one unit; returns tags, figures, task states.

    ``image=False`` trains every model without the photo (a tabular+text cascade); the flag is an
    input of every cached task, so such a run never reuses an image run's results.
    """
    settings = Settings.from_env()
    feast = FeastConfig.from_settings(settings)
    states: dict[str, str] = {}
    fingerprint = _run(states, prepare_data, str(settings.data_dir), n_orders, n_customers, seed)
    print(_run(states, sync_features, fingerprint, feast))
    path = _run(states, build_training_set, fingerprint, feast, str(settings.home / "training"))
    oof = _run(states, router_out_of_fold, path, router_head or head, seed, n_splits, image)
    router, chosen = _run(states, fit_router, path, router_head or head, seed, threshold, oof, image)
    routed = cascade.route(oof, chosen.value)
    specialists = _run(states, fit_specialists, path, head, seed, routed, image)
    baselines = _run(states, fit_baselines, path, head, seed, image)
    router_key = _digest(path, router_head or head, seed, threshold, n_splits, oof.tobytes(), image)
    specialists_key = _digest(router_key, head, routed.tobytes())
    models = _digest(router_key, specialists_key, "baselines", head)
    figures = _run(
        states, evaluate_cascade, path, models, router, chosen.value, specialists, baselines, image
    )
    store = str(settings.bentoml_home.resolve())
    roles = {"router": (router_key, router)} | {b: (specialists_key, m) for b, m in specialists.items()}
    packaging = packaging_fingerprint()
    tags = {}
    for role, (key, model) in roles.items():
        args = (f"{name}-{role}", key, packaging, model, path, role, router, chosen.value, store, image)
        tags[role] = _run(states, package, *args, key=role)
        if not has_model(tags[role]):  # a cached result whose model was deleted from the store since
            tags[role] = _run(states, package.with_options(refresh_cache=True), *args, key=role)
    branches = {branch: tags[branch] for branch in (cascade.POSITIVE_BRANCH, cascade.NEGATIVE_BRANCH)}
    figures["threshold"] = {"value": chosen.value, "rule": chosen.rule, "reason": chosen.reason}
    figures["training_set"] = Path(path).name  # the monitor's reference: <home>/training/<this>
    figures["holdout"] = HOLDOUT
    manifest, status = _run(states, write_manifest, name, tags["router"], chosen, branches, figures)
    print(f"cascade {manifest} stored as {status}")
    return {"manifest": manifest, "status": status, "models": tags, "figures": figures, "task_states": states}


def _run(states: dict[str, str], step: Any, *args: Any, key: str | None = None) -> Any:
    """Run a task, record its final state's name (e.g. ``Completed`` or ``Cached``)."""
    state = step(*args, return_state=True)
    states[f"{step.name}[{key}]" if key else step.name] = state.name
    return state.result()


def _digest(*parts: Any) -> str:
    """A key naming the inputs that fitted a set of models."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
    return digest.hexdigest()


def _factory(head: Head, seed: int, image: bool) -> Any:
    return lambda: make_pipeline(head, seed=seed, image=image)


def _rows_for(
    role: str, frame: pd.DataFrame, router: Any, threshold: float, columns: list[str]
) -> pd.DataFrame:
    if role == "router":
        return frame
    routed = cascade.route(router.predict_proba(frame[columns])[:, 1], threshold)
    return frame[routed if role == cascade.POSITIVE_BRANCH else ~routed]
