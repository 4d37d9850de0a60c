"""The ``train_cascade`` Prefect flow: cascade file → features → training set → cascade → store.

    cascade file ─► Feast repository applied ─► data joined point in time ─► training set
      ─► router out of fold ─► routing rule ─► router and branch models fitted ─► baselines
      ─► evaluation on the held-out time slice ─► each model packaged through the parity gate
      ─► cascade manifest (reference set, monitoring defaults) ─► champion if it is the first

Each step is a task. The expensive ones are cached on their inputs and their own source
(``INPUTS + TASK_SOURCE``) with persisted results, so a second run with the same file, data
and code reuses them, and a changed step reruns only what depends on it. A step's inputs
name exactly what it reads — the sections of the cascade file it uses (a changed branch
pipeline leaves the router's steps cached), the digest of the modules beside the file, the
data's sha256, the training set's path — so the cache keys stay cheap to compute; fitted
models travel with a key naming what produced them, and their pickles (not byte-stable
across a save and load) are left out of the hash. Steps that touch outside state (the
feature store, the manifest and its alias) always run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from prefect import flow, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from skewguard.bentos.manifest import (
    MonitoringDefaults,
    ReferenceSet,
    champion_tag,
    compose_manifest,
    promote,
    save_manifest,
)
from skewguard.bentos.package import package_model, packaging_fingerprint
from skewguard.bentos.store import has_model
from skewguard.featurestore.connection import FeastConfig, project_name
from skewguard.featurestore.repository import FeatureSelection, apply_repository, resolve_features
from skewguard.pipeline import cascade
from skewguard.pipeline.cascade_file import LoadedCascadeFile, RouterSection, load_cascade_file
from skewguard.pipeline.training_set import (
    build_training_frame,
    input_columns,
    load_training_set,
    split_by_time,
)
from skewguard.settings import Settings

CACHED: dict[str, Any] = {"cache_policy": INPUTS + TASK_SOURCE, "persist_result": True}
MODELS_KEYED: dict[str, Any] = {
    "cache_policy": (INPUTS - "model" - "router" - "branches" - "baselines") + TASK_SOURCE,
    "persist_result": True,
}
MAX_GATE_ROWS = 2_000


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """What every fitting step depends on: where the file is, its code, its data and how it is split."""

    file: str
    code: str
    """sha256 of the Python modules beside the cascade file."""
    training_set: str
    data: dict[str, Any]
    """The file's data section (which rows are held out)."""

    def load(self) -> LoadedCascadeFile:
        return load_cascade_file(Path(self.file))

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The training rows and the held-out rows, split by time as the data section says."""
        frame = load_training_set(self.training_set)
        return split_by_time(frame, self.data["timestamp"], self.data["holdout"])


@task(cache_policy=NO_CACHE)
def sync_features(file: str, feast: FeastConfig) -> FeatureSelection | None:
    """Register the file's Feast repository and resolve the features it selects."""
    loaded = load_cascade_file(Path(file))
    features = loaded.spec.features
    if features is None:
        return None
    for name in apply_repository(feast):
        print(f"feast: applied {name}")
    return resolve_features(
        feast, entity_key=features.entity_key, service=features.service, refs=features.refs
    )


@task(**CACHED)
def build_training_set(
    file: str,
    data: dict[str, Any],
    features: dict[str, Any] | None,
    data_sha256: str,
    features_code: str,
    selection: FeatureSelection | None,
    feast: FeastConfig,
    out_dir: str,
) -> str:
    """The file's data joined point in time with its online features (Feast), as parquet."""
    loaded = load_cascade_file(Path(file))
    frame = build_training_frame(loaded, selection, feast)
    key = _digest(data, features, data_sha256, features_code, selection)
    path = Path(out_dir) / f"training-{key[:16]}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    if selection is not None:
        missing = int(frame[list(selection.refs)].isna().any(axis=1).sum())
        print(f"training set: {len(frame)} rows, {missing} without fresh online features")
    return str(path)


@task(**CACHED)
def router_out_of_fold(
    source: Source, columns: list[str], router_section: dict[str, Any]
) -> tuple[NDArray[np.float64], tuple[Any, ...]]:
    """The router's out-of-fold probabilities on every training row (time-ordered folds), its classes."""
    loaded = source.load()
    router = RouterSection.model_validate(router_section)
    train, _ = source.frames()
    factory = loaded.model_factory("router.pipeline", router.pipeline)
    proba, classes = cascade.out_of_fold_proba(
        factory, train[columns], train[router.target], train[source.data["timestamp"]], router.n_splits
    )
    return np.ascontiguousarray(proba), classes  # hashes the same as its reloaded copy downstream


@task(**CACHED)
def fit_router(source: Source, columns: list[str], router_section: dict[str, Any]) -> Any:
    """The router on every training row."""
    loaded = source.load()
    router = RouterSection.model_validate(router_section)
    train, _ = source.frames()
    return loaded.model_factory("router.pipeline", router.pipeline)().fit(
        train[columns], train[router.target]
    )


@task(**CACHED)
def fit_branches(
    source: Source, columns: list[str], routed: NDArray[np.str_], branches: dict[str, Any], task_kind: str
) -> dict[str, Any]:
    """One model per branch, each on the rows the router's out-of-fold routing sends it."""
    loaded = source.load()
    train, _ = source.frames()
    kind: cascade.Task = "regression" if task_kind == "regression" else "classification"
    return cascade.fit_branches(train[columns], _targets(loaded, train), routed, _factories(loaded), kind)


@task(**CACHED)
def fit_baselines(
    source: Source,
    columns: list[str],
    router_section: dict[str, Any] | None,
    branches: dict[str, Any],
    baseline: str | None,
) -> tuple[Any, dict[str, Any] | None]:
    """The comparisons: one monolithic model, and branch models fitted on the true routes."""
    loaded = source.load()
    spec = loaded.spec
    train, _ = source.frames()
    X = train[columns]
    baseline = spec.baseline or next(iter(spec.branches.values())).pipeline
    monolithic = loaded.model_factory("baseline", baseline)().fit(X, train[spec.data.target])
    if spec.router is None:
        return monolithic, None
    true_routes = _true_routes(loaded, train)
    true_label = cascade.fit_branches(X, _targets(loaded, train), true_routes, _factories(loaded), spec.task)
    return monolithic, true_label


@task(**MODELS_KEYED)
def evaluate_cascade(
    source: Source,
    columns: list[str],
    models_key: str,
    router: Any,
    rule: cascade.RoutingRule | None,
    branches: dict[str, Any],
    baselines: tuple[Any, dict[str, Any] | None],
) -> dict[str, Any]:
    """Figures on the held-out time slice: the cascade, a monolithic model, the true-route cascade."""
    loaded = source.load()
    _, holdout = source.frames()
    monolithic, true_label = baselines
    return cascade.evaluate(
        cascade.TrainedCascade(rule, router, branches),
        holdout[columns].reset_index(drop=True),
        _targets(loaded, holdout),
        loaded.spec.task,
        monolithic=monolithic,
        true_label=true_label,
        true_routes=_true_routes(loaded, holdout) if loaded.spec.router else None,
    )


@task(**MODELS_KEYED)
def package(
    name: str,
    source: Source,
    columns: list[str],
    models_key: str,
    packaging: str,
    model: Any,
    role: str,
    router: Any,
    rule: cascade.RoutingRule | None,
    selection: FeatureSelection | None,
    store: str,
    probe_seed: int = 0,
) -> str:
    """Convert and gate one model on the held-out rows it will see; return its store tag.

    ``packaging`` (``packaging_fingerprint()``) is only a cache key: the task's own source is
    in the key already, but the converter, the gate and the store it calls are not.
    """
    loaded = source.load()
    train, holdout = source.frames()
    trained = cascade.TrainedCascade(rule, router, {})
    if role != "router" and router is not None:
        train, holdout = (rows[cascade.route(trained, rows[columns]) == role] for rows in (train, holdout))
    target = (
        loaded.spec.router.target if role == "router" and loaded.spec.router else _target_of(loaded, role)
    )
    sample = holdout.iloc[:MAX_GATE_ROWS]
    return package_model(
        model,
        sample[columns],
        name=name,
        y_sample=sample[target].to_numpy(),
        X_profile=train[columns],
        entity_key=selection.entity_key if selection else None,
        online_features=dict(selection.refs) if selection else None,
        labels={"role": role, "target": target, "cascade": loaded.spec.name},
        tolerance=loaded.spec.parity.tolerance,
        regression_atol=loaded.spec.parity.atol,
        regression_rtol=loaded.spec.parity.rtol,
        seed=probe_seed,
    )


@task(cache_policy=NO_CACHE)
def write_manifest(
    name: str, tags: dict[str, str], rule: cascade.RoutingRule | None, fields: dict[str, Any]
) -> tuple[str, str]:
    """Store the cascade manifest; the first cascade of a name becomes its champion."""
    branches = {role: tag for role, tag in tags.items() if role != "router"}
    routing: dict[str, Any] = {}
    if rule is not None:
        routing = {
            "router_tag": tags["router"],
            "routes": dict(rule.routes),
            "threshold": rule.threshold,
            "positive_class": rule.positive_class,
            "threshold_reason": rule.reason,
        }
    tag = save_manifest(compose_manifest(name, branches=branches, **routing, **fields))
    if champion_tag(name) is None:
        promote(tag)
        return tag, "champion"
    return tag, "candidate"


@flow(name="train_cascade", log_prints=True)
def train_cascade(file: str | Path, *, settings: Settings | None = None) -> dict[str, Any]:
    """Train, gate, store and evaluate the cascade a cascade file declares, as one unit.

    Returns the manifest's tag, its status, the model tags, the figures and each task's final state.
    """
    settings = settings or Settings.from_env()
    loaded = load_cascade_file(Path(file))
    spec = loaded.spec
    feast = FeastConfig.for_project(
        settings,
        project_name(settings, spec.name),
        loaded.resolve(spec.features.repository) if spec.features else None,
    )
    states: dict[str, str] = {}
    selection = _run(states, sync_features, str(loaded.path), feast)
    out_dir = str(settings.home / "training" / spec.name)
    data_sha = _sha256(loaded.resolve(spec.data.path), loaded)
    features_code = loaded.code_digest(feast.repo_dir) if feast.repo_dir else ""
    read = {key: loaded.section("data")[key] for key in ("path", "timestamp")}  # what the set is built from
    sections = (read, loaded.section("features"))
    path = _run(
        states,
        build_training_set,
        str(loaded.path),
        *sections,
        data_sha,
        features_code,
        selection,
        feast,
        out_dir,
    )
    source = Source(str(loaded.path), loaded.code_digest(), path, loaded.section("data"))
    columns = input_columns(loaded, load_training_set(path, decode=False), selection)
    models, rule = _fit(states, source, columns)
    tags = _package_all(states, settings, source, columns, models, rule, selection)
    figures = _run(
        states,
        evaluate_cascade,
        source,
        columns,
        models["key"],
        models["router"],
        rule,
        models["branches"],
        models["baselines"],
    )
    if rule is not None:
        figures["threshold"] = {
            "value": rule.threshold,
            "positive_class": rule.positive_class,
            "reason": rule.reason,
        }
    fields = _manifest_fields(settings, loaded, feast, selection, path, columns)
    manifest, status = _run(states, write_manifest, spec.name, tags, rule, fields | {"metrics": figures})
    print(f"cascade {manifest} stored as {status}")
    return {"manifest": manifest, "status": status, "models": tags, "figures": figures, "task_states": states}


def _fit(
    states: dict[str, str], source: Source, columns: list[str]
) -> tuple[dict[str, Any], cascade.RoutingRule | None]:
    """The router (with its rule), the branch models and the baselines; keys naming what fitted them."""
    spec = source.load().spec
    router, rule = None, None
    train, _ = source.frames()
    routed = np.full(len(train), next(iter(spec.branches)), dtype=object).astype(np.str_)
    router_section = None if spec.router is None else spec.router.model_dump(mode="json")
    branch_sections = {name: b.model_dump(mode="json") for name, b in spec.branches.items()}
    router_key = _digest(source, columns, router_section)
    if spec.router is not None:
        oof = _run(states, router_out_of_fold, source, columns, router_section)
        router_rule = spec.router
        rule = cascade.choose_rule(
            router_rule.routes,
            router_rule.threshold,
            router_rule.positive_class,
            train[router_rule.target],
            oof,
        )
        router = _run(states, fit_router, source, columns, router_section)
        routed = rule.assign(*oof)
        router_key = _digest(router_key, rule, routed.tobytes())
    branches = _run(states, fit_branches, source, columns, routed, branch_sections, spec.task)
    baselines = _run(states, fit_baselines, source, columns, router_section, branch_sections, spec.baseline)
    models = {"router": router, "branches": branches, "baselines": baselines, "router_key": router_key}
    return models | {"key": _digest(router_key, branch_sections, spec.task, spec.baseline)}, rule


def _package_all(
    states: dict[str, str],
    settings: Settings,
    source: Source,
    columns: list[str],
    models: dict[str, Any],
    rule: cascade.RoutingRule | None,
    selection: FeatureSelection | None,
) -> dict[str, str]:
    """Each model through the parity gate into the store; a cached tag whose model is gone is redone."""
    name = source.load().spec.name
    roles = ({"router": models["router"]} if models["router"] is not None else {}) | models["branches"]
    store, packaging = str(settings.bentoml_home.resolve()), packaging_fingerprint()
    tags = {}
    for role, model in roles.items():
        args = (
            f"{name}-{role}",
            source,
            columns,
            models["router_key"] if role == "router" else models["key"],
            packaging,
            model,
            role,
            models["router"],
            rule,
            selection,
            store,
            settings.parity_probe_seed,
        )
        tags[role] = _run(states, package, *args, key=role)
        if not has_model(tags[role]):  # a cached result whose model was deleted from the store since
            tags[role] = _run(states, package.with_options(refresh_cache=True), *args, key=role)
    return tags


def _manifest_fields(
    settings: Settings,
    loaded: LoadedCascadeFile,
    feast: FeastConfig,
    selection: FeatureSelection | None,
    training_set: str,
    columns: list[str],
) -> dict[str, Any]:
    """Everything the manifest records besides the models: reference set, features, monitoring."""
    spec = loaded.spec
    path = Path(training_set).resolve()
    home = settings.home.resolve()
    time_field = spec.monitoring.time_field or (
        spec.data.timestamp if spec.data.timestamp in columns else None
    )
    if time_field is not None and time_field not in columns:
        raise loaded.error("monitoring.time_field", f"{time_field!r} is not an input column of the models.")
    return {
        "reference": ReferenceSet(
            path=str(path.relative_to(home)) if path.is_relative_to(home) else str(path),
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            time_column=spec.data.timestamp,
            holdout=spec.data.holdout,
            rows=len(load_training_set(training_set, decode=False)),
        ),
        "monitoring": MonitoringDefaults(
            watch=tuple(spec.monitoring.watch),
            min_rows=spec.monitoring.min_rows,
            skew_threshold=spec.monitoring.skew_threshold,
            drift_share=spec.monitoring.drift_share,
        ),
        "feature_project": feast.project if selection else None,
        "feature_repository": str(feast.repo_dir) if selection and feast.repo_dir else None,
        "feature_ttl_seconds": dict(selection.ttl_seconds) if selection else {},
        "entity_key_type": selection.entity_type if selection else "int64",
        "event_time_field": time_field,
        "source_file": str(loaded.path),
        "target": spec.data.target,
    }


def _router(loaded: LoadedCascadeFile) -> RouterSection:
    if loaded.spec.router is None:
        raise loaded.error("router", "this cascade has no router.")
    return loaded.spec.router


def _targets(loaded: LoadedCascadeFile, frame: pd.DataFrame) -> dict[str, Any]:
    return {branch: frame[_target_of(loaded, branch)].to_numpy() for branch in loaded.spec.branches}


def _target_of(loaded: LoadedCascadeFile, branch: str) -> str:
    return loaded.spec.branches[branch].target or loaded.spec.data.target


def _factories(loaded: LoadedCascadeFile) -> dict[str, cascade.Factory]:
    return {
        branch: loaded.model_factory(f"branches.{branch}.pipeline", section.pipeline)
        for branch, section in loaded.spec.branches.items()
    }


def _true_routes(loaded: LoadedCascadeFile, frame: pd.DataFrame) -> NDArray[np.str_]:
    """The branch each row's true routing label sends it to."""
    router = _router(loaded)
    routes = router.routes
    labels = [cascade.class_key(v) for v in frame[router.target].to_numpy()]
    unknown = sorted({label for label in labels if label not in routes})
    if unknown:
        raise loaded.error(
            "router.routes", f"the router's target holds classes {unknown[:5]} that no route maps."
        )
    return np.array([routes[label] for label in labels], dtype=np.str_)


def _sha256(path: Path, loaded: LoadedCascadeFile) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise loaded.error(
            "data.path",
            f"cannot read {path}: {exc.strerror}.",
            "Check the path (relative to the cascade file).",
        ) from exc


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
