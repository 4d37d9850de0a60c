"""The cascade file: one YAML file declares a cascade — its data, features, router, branches, monitoring.

    name: deliveries                      # the served name: POST /v1/cascades/deliveries/predict
    task: regression                      # of the final answer: classification | regression
    data:
      path: data/deliveries.parquet       # .parquet or .csv, relative to this file ($VARS expanded)
      timestamp: ordered_at               # the event time: point-in-time joins, the time-ordered holdout
      target: minutes                     # the label the branches learn
      holdout: 0.2                        # the newest share, held out of fitting
    features:                             # optional: online features from a Feast repository
      repository: feature_repo            # relative to this file
      entity_key: shop_id
      service: delivery_features          # or refs: [shop_stats:orders_7d, ...]
    router:                               # optional: without it, the one branch is the model
      pipeline: models:make_router        # module:callable returning an unfitted sklearn pipeline
      target: is_late                     # the column the router learns
      threshold: max_f1                   # two classes: a number in (0, 1) or max_f1; omit: top class
      routes: {1: late, 0: on_time}       # router class → branch
    branches:
      late: {pipeline: models:make_duration}
      on_time: {pipeline: models:make_duration}
    monitoring: {watch: [], min_rows: 500, skew_threshold: 0.01}

Modules named by ``module:callable`` are imported from the file's folder (put first on
``sys.path``), so a user's project works without being installed. Every mistake is a
:class:`~skewguard.errors.ConfigError` naming the file, the key, its line and the fix.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skewguard.errors import ConfigError

NAME_PATTERN = r"^[a-z0-9]([-._a-z0-9]{0,53}[a-z0-9])?$"
CallableRef = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:callable, the module imported from the cascade file's folder",
    ),
]
SCHEMA_ID = "https://skewguard.dev/schemas/cascade-file.json"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSection(_Section):
    """The labelled rows the cascade is trained on."""

    path: str = Field(description="A .parquet or .csv file, relative to the cascade file; $VARS expanded.")
    timestamp: str = Field(description="The event-time column: point-in-time joins and the holdout's order.")
    target: str = Field(description="The label column the branches learn (a branch may name its own).")
    holdout: float = Field(default=0.2, ge=0.05, lt=1.0, description="The newest share held out of fitting.")
    columns: list[str] | None = Field(
        default=None,
        description="The input columns the models read; default: every column but labels and the entity key. "
        "Online features are added to them.",
    )


class FeaturesSection(_Section):
    """Online features from a Feast repository, fetched by entity key in serving."""

    repository: str = Field(description="The Feast repository folder, relative to the cascade file.")
    entity_key: str = Field(description="The join key of the features' entity; a column of the data.")
    service: str | None = Field(default=None, description="A feature service of the repository.")
    refs: list[str] = Field(default_factory=list, description="Or a list of view:feature references.")


class RouterSection(_Section):
    """The router: a classifier whose classes pick each row's branch."""

    pipeline: CallableRef
    target: str = Field(description="The column the router learns.")
    routes: dict[str, str] = Field(min_length=2, description="Router class → branch; classes may share one.")
    threshold: float | Literal["max_f1"] | None = Field(
        default=None,
        description="Two classes only: P(positive_class) >= threshold routes to its branch; a number in "
        "(0, 1) or max_f1 (chosen on out-of-fold predictions). Omitted: the most probable class.",
    )
    positive_class: str | None = Field(default=None, description="Default: the greatest class.")
    n_splits: int = Field(default=5, ge=2, le=20, description="Time blocks for out-of-fold routing.")

    @field_validator("routes", mode="before")
    @classmethod
    def _class_keys_as_text(cls, value: Any) -> Any:
        return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value

    @field_validator("positive_class", mode="before")
    @classmethod
    def _class_as_text(cls, value: Any) -> Any:
        return None if value is None else str(value)


class BranchSection(_Section):
    """One branch's model."""

    pipeline: CallableRef
    target: str | None = Field(default=None, description="Its own label column; default: data.target.")


class MonitoringSection(_Section):
    """Defaults of `skewguard monitor` and `retrain` for this cascade."""

    watch: list[str] = Field(default_factory=list, description="Columns whose drift alone makes a verdict.")
    time_field: str | None = Field(
        default=None,
        description="The request field that dates a row (feature freshness, online/offline skew); "
        "default: data.timestamp when the models read it.",
    )
    min_rows: int = Field(default=500, ge=1, description="Fewer served rows: no verdict.")
    skew_threshold: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Share of rows served off the offline value that is skew."
    )
    drift_share: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Share of drifted columns that is drift."
    )


class ParitySection(_Section):
    """The parity gate's tolerances for this cascade's models."""

    tolerance: float = Field(default=1e-6, gt=0, description="Max abs probability difference (classifiers).")
    atol: float = Field(default=1e-6, ge=0, description="Regressors: absolute tolerance.")
    rtol: float = Field(default=1e-6, ge=0, description="Regressors: tolerance relative to |prediction|.")


class CascadeFile(_Section):
    """A cascade, declared: trained by `skewguard train -f`, served under ``name``."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={"$id": SCHEMA_ID}, title="skewguard cascade file"
    )

    name: str = Field(
        pattern=NAME_PATTERN, description="The cascade's name: lowercase, digits, '-', '.', '_'."
    )
    task: Literal["classification", "regression"] = Field(description="What the final answer is.")
    data: DataSection
    features: FeaturesSection | None = None
    router: RouterSection | None = None
    branches: dict[str, BranchSection] = Field(min_length=1)
    baseline: CallableRef | None = Field(
        default=None, description="The monolithic model it is compared with; default: the first branch's."
    )
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection)
    parity: ParitySection = Field(default_factory=ParitySection)


@dataclass(frozen=True, slots=True)
class LoadedCascadeFile:
    """A validated cascade file, where it is, and the line of each of its keys (for messages)."""

    path: Path
    spec: CascadeFile
    lines: Mapping[tuple[str, ...], int]

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def resolve(self, value: str) -> Path:
        """A path of the file: ``~`` and ``$VARS`` expanded, relative to the file's folder."""
        path = Path(os.path.expandvars(os.path.expanduser(value)))
        return path if path.is_absolute() else (self.folder / path).resolve()

    def error(self, key: str, message: str, fix: str = "") -> ConfigError:
        """A ConfigError naming this file, ``key`` (dotted) and its line."""
        line = self.line_of(key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {key}: {message}{' ' + fix if fix else ''}", field=key)

    def line_of(self, key: str) -> int | None:
        parts = tuple(key.split("."))
        while parts and parts not in self.lines:
            parts = parts[:-1]
        return self.lines.get(parts)

    def load_callable(self, key: str, ref: str) -> Callable[[], Any]:
        """The ``module:callable`` at ``key``, imported from the file's folder."""
        module_name, _, attribute = ref.partition(":")
        try:
            module = import_from(self.folder, module_name)
        except Exception as exc:
            raise self.error(
                key,
                f"cannot import {module_name!r} from {self.folder}: {type(exc).__name__}: {exc}.",
                "Check the module name and that the module imports on its own.",
            ) from exc
        found = getattr(module, attribute, None)
        if not callable(found):
            raise self.error(
                key,
                f"{module_name!r} has no callable {attribute!r}.",
                "Name a function that returns an unfitted pipeline.",
            )
        factory: Callable[[], Any] = found
        return factory

    def model_factory(self, key: str, ref: str) -> Callable[[], Any]:
        """A factory of unfitted scikit-learn estimators, checked once by calling it."""
        factory = self.load_callable(key, ref)
        try:
            sample = factory()
        except Exception as exc:
            raise self.error(key, f"{ref}() raised {type(exc).__name__}: {exc}.") from exc
        if not (hasattr(sample, "fit") and hasattr(sample, "predict") and hasattr(sample, "get_params")):
            raise self.error(
                key,
                f"{ref}() returned a {type(sample).__name__}, not a scikit-learn estimator or pipeline.",
                "Return an unfitted estimator, e.g. sklearn.pipeline.make_pipeline(...).",
            )
        return factory

    def code_digest(self, folder: Path | None = None) -> str:
        """sha256 of the Python modules in ``folder`` (default: the file's) and below: what the
        cached steps' results depend on besides the file's keys."""
        root = folder or self.folder
        digest = hashlib.sha256()
        for module in sorted(root.rglob("*.py")):
            parts = module.relative_to(root).parts
            if not any(part.startswith(".") or part == "__pycache__" for part in parts):
                digest.update(str(module.relative_to(root)).encode() + b"\0" + module.read_bytes())
        return digest.hexdigest()

    def section(self, key: str) -> Any:
        """One top-level key's value as plain JSON data (a cache key names exactly what a step read)."""
        return self.spec.model_dump(mode="json")[key]


def import_from(folder: Path, module_name: str) -> Any:
    """Import ``module_name`` from ``folder`` (first on ``sys.path``), replacing a cached module of
    the same name from another folder, so two projects' ``models.py`` never mix."""
    root = str(folder.resolve())
    top = module_name.split(".")[0]
    cached = sys.modules.get(top)
    origin = getattr(cached, "__file__", None)
    if cached is not None and (origin is None or not Path(origin).resolve().is_relative_to(root)):
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    importlib.invalidate_caches()
    return importlib.import_module(module_name)


def labeled_data(source_file: str | None) -> Path | None:
    """The data a cascade file trains on (its labeled history, where late labels arrive), if it is there."""
    if source_file is None or not Path(source_file).is_file():
        return None
    loaded = load_cascade_file(Path(source_file))
    path = loaded.resolve(loaded.spec.data.path)
    return path if path.is_file() else None


def load_cascade_file(path: Path) -> LoadedCascadeFile:
    """Read and validate a cascade file; a ConfigError names the key, its line and the fix."""
    path = path.resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the cascade file {path}: {exc.strerror}.", field="file") from exc
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", field="file") from exc
    lines = _key_lines(node, ()) if node is not None else {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of keys (name, task, data, ...) at the top.", field="file"
        )
    try:
        spec = CascadeFile.model_validate(data)
    except ValidationError as exc:
        raise _explain(path, lines, exc) from exc
    loaded = LoadedCascadeFile(path, spec, lines)
    _check_consistency(loaded)
    return loaded


def _check_consistency(loaded: LoadedCascadeFile) -> None:
    """What spans keys: routes naming the branches, one way of selecting features."""
    spec = loaded.spec
    if spec.features is not None and (spec.features.service is None) == (not spec.features.refs):
        raise loaded.error("features", "give exactly one of service or refs.")
    if spec.router is None:
        if len(spec.branches) != 1:
            raise loaded.error(
                "branches",
                f"without a router there is one model; got {len(spec.branches)} branches.",
                "Add a router, or keep one branch.",
            )
        return
    routed = set(spec.router.routes.values())
    if routed != set(spec.branches):
        raise loaded.error(
            "router.routes",
            f"the routes send rows to {sorted(routed)} but the branches are {sorted(spec.branches)}.",
            "Make them the same.",
        )
    if len(routed) < 2:
        raise loaded.error("router.routes", "the routes send every class to one branch; a router needs two.")
    if "router" in spec.branches:
        raise loaded.error(
            "branches.router", "'router' names the router's role.", "Choose another branch name."
        )
    if spec.router.threshold is not None and len(spec.router.routes) != 2:
        raise loaded.error(
            "router.threshold",
            f"a threshold needs a router of two classes; the routes map {len(spec.router.routes)}.",
            "Remove the threshold: the most probable class then picks the branch.",
        )


def schema() -> dict[str, Any]:
    """The JSON Schema of the cascade file (draft 2020-12), for editors and CI checks."""
    found = CascadeFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **found}


def _key_lines(node: yaml.Node, prefix: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    """The 1-based line of every key in the YAML tree, by its path of keys (list items by index)."""
    found: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            found[path] = key.start_mark.line + 1
            found.update(_key_lines(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = (*prefix, str(i))
            found[path] = item.start_mark.line + 1
            found.update(_key_lines(item, path))
    return found


def _explain(path: Path, lines: Mapping[tuple[str, ...], int], exc: ValidationError) -> ConfigError:
    """The first validation error as a sentence: where, what was wrong, what is expected."""
    error = exc.errors()[0]
    loc = tuple(str(part) for part in error["loc"] if not str(part).startswith("function-after"))
    key = ".".join(loc) or "(top)"
    probe = loc
    while probe and probe not in lines:
        probe = probe[:-1]
    where = f"{path}:{lines[probe]}" if probe in lines else str(path)
    return ConfigError(f"{where}: {key}: {_describe(error, loc)}", field=key)


def _describe(error: Mapping[str, Any], loc: Sequence[str]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"unknown key {loc[-1]!r}; expected one of {', '.join(allowed)}."
    if kind == "missing":
        return "this key is required and missing."
    given = error.get("input")
    shown = repr(given) if not isinstance(given, Mapping | list) else type(given).__name__
    return f"{str(error['msg']).removeprefix('Value error, ')} (got {shown})."


def _allowed_keys(loc: Sequence[str]) -> list[str]:
    """The keys of the section at ``loc`` (for an unknown key's message)."""
    model: type[BaseModel] = CascadeFile
    in_dict = False
    for part in loc:
        if in_dict:  # a key of a mapping section, such as a branch's name
            in_dict = False
            continue
        field = model.model_fields.get(part)
        inner = _section_in(field.annotation) if field is not None else None
        if field is None or inner is None:
            return []
        in_dict = typing.get_origin(field.annotation) is dict
        model = inner
    return sorted(model.model_fields)


def _section_in(annotation: Any) -> type[BaseModel] | None:
    """The section model an annotation holds: itself, optional, or as a mapping's values."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
