"""The cascade manifest: which router and specialists make one served cascade, and which is champion.

A manifest is a BentoML model ``cascade-{name}`` holding one ``manifest.json`` whose sha256
is recorded in the model's metadata; loading recomputes it and refuses a changed file.
The champion alias lives outside the models, because BentoML 1.4 has no API to change a
stored model's labels (and rewriting ``model.yaml`` in place would expose half-written
files to readers): in ``cascade_aliases.json`` in the BentoML home by default, or in Redis
or PostgreSQL when replicas run on several machines (``skewguard.bentos.aliases``). It
is replaced atomically, so a gateway polling ``champion_tag`` always reads either the old
or the new champion. With a model export configured, a promotion first exports the
champion's manifest and models (``skewguard.bentos.exports``), and ``champion`` imports
what the local store lacks, checked against the sha256 the alias records.

Status is derived, not stored: ``champion`` is the alias's tag, ``retired`` a former
champion, ``candidate`` any other manifest. The label ``status`` is the status at saving.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import bentoml
from bentoml.exceptions import NotFound
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from skewguard.bentos.aliases import ALIASES_FILE as ALIASES_FILE
from skewguard.bentos.aliases import Alias, sharing
from skewguard.bentos.exports import export_models, import_missing
from skewguard.bentos.spec import FieldSpec, InputSpec, OnlineFeature
from skewguard.bentos.store import StoredModel, load_model, make_readable, model_store
from skewguard.errors import ArtifactError, ConfigError, ModelNotFoundError

MANIFEST_FILE = "manifest.json"
MODULE = "skewguard.cascade"
NAME_PATTERN = r"^[a-z0-9]([-._a-z0-9]{0,53}[a-z0-9])?$"  # so that cascade-{name} is a valid tag
ModelTag = Annotated[str, Field(pattern=r"^[^:\s]+:[^:\s]+$")]
Status = Literal["candidate", "champion", "retired"]


class RouterRef(BaseModel):
    """The router model and its rule: which branch each of its classes sends a row to.

    ``routes`` maps each router class (as JSON renders it: ``"1"``, ``"web"``) to a branch;
    several classes may share one. Without ``threshold`` a row goes where its most probable
    class routes it. With one (two classes only): P(``positive_class``) >= threshold sends
    it where the positive class routes, anything less where the other class routes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: ModelTag
    routes: dict[str, str] = Field(min_length=2)
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    positive_class: str | None = None
    threshold_reason: str = ""

    @model_validator(mode="after")
    def _rule_is_complete(self) -> RouterRef:
        if len(set(self.routes.values())) < 2:
            raise ValueError(f"routes {self.routes} send every class to one branch; a router needs two")
        if self.threshold is None:
            if self.positive_class is not None:
                raise ValueError("positive_class needs a threshold")
            return self
        if len(self.routes) != 2 or self.positive_class not in self.routes:
            raise ValueError(
                f"a threshold rule needs exactly two router classes and positive_class among them; got "
                f"routes {sorted(self.routes)} and positive_class {self.positive_class!r}"
            )
        return self

    @property
    def branches(self) -> tuple[str, ...]:
        """The branches the rule can choose, in the order of ``routes``."""
        return tuple(dict.fromkeys(self.routes.values()))

    def choose(self, probabilities: Mapping[str, float]) -> tuple[str, float]:
        """The branch for one row from the router's ``{class: probability}``, and the probability
        that decided it (P(positive class) with a threshold, else the top class's)."""
        if self.threshold is not None:
            positive = str(self.positive_class)
            p = float(probabilities[positive])
            if p >= self.threshold:
                return self.routes[positive], p
            return next(branch for cls, branch in self.routes.items() if cls != positive), p
        top = max(probabilities, key=probabilities.__getitem__)
        return self.routes[top], float(probabilities[top])


class ReferenceSet(BaseModel):
    """The training set a cascade was fitted on, for monitoring: where, which bytes, how split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    """Relative to the skewguard home when inside it (so the home can move), else absolute."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    time_column: str | None = None
    holdout: float = Field(default=0.2, ge=0.0, lt=1.0)
    """The newest share by ``time_column``, held out of fitting; the rest is the reference."""
    rows: int = Field(default=0, ge=0)


class MonitoringDefaults(BaseModel):
    """What ``skewguard monitor`` and ``retrain`` use for this cascade unless told otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    watch: tuple[str, ...] = ()
    """Columns whose drift alone makes a verdict (empty: every column)."""
    min_rows: int = Field(default=500, ge=1)
    skew_threshold: float = Field(default=0.01, ge=0.0, le=1.0)
    """The share of rows whose served online feature differs from the offline one that is skew."""
    drift_share: float = Field(default=0.5, gt=0.0, le=1.0)
    """The share of drifted columns that makes the dataset drifted."""


Task = Literal["classification", "regression"]
EntityKeyType = Literal["int64", "string"]


class CascadeManifest(BaseModel):
    """One cascade version as stored; ``tag`` and ``status`` are filled in when it is loaded.

    ``router`` is None for a cascade of one model: then ``branches`` holds exactly that model.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[2] = 2
    name: str = Field(pattern=NAME_PATTERN)
    task: Task = "classification"
    target: str | None = None
    """The label column the final answer predicts (the comparison of two versions scores on it)."""
    router: RouterRef | None = None
    branches: dict[str, ModelTag] = Field(min_length=1)
    entity_key: str | None = None
    entity_key_type: EntityKeyType = "int64"
    feature_project: str | None = None
    """The Feast project holding the online features (see ``skewguard.featurestore``)."""
    feature_repository: str | None = None
    """The Feast repository's folder at training (the monitor's offline reads resolve paths in it)."""
    feature_refs: dict[str, str] = Field(default_factory=dict)
    """Online feature name → Feast reference ``view:feature``."""
    feature_ttl_seconds: dict[str, float] = Field(default_factory=dict)
    """Online feature name → its view's TTL; older values are served as missing (training's view)."""
    event_time_field: str | None = None
    """The request field that dates a row (feature freshness, online/offline skew); else serving time."""
    input_spec: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    reference: ReferenceSet | None = None
    monitoring: MonitoringDefaults = Field(default_factory=MonitoringDefaults)
    source_file: str | None = None
    """The cascade file it was trained from (``skewguard retrain`` trains the next candidate from it)."""
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    status: Status = "candidate"
    tag: str | None = None

    @model_validator(mode="after")
    def _branches_match_router(self) -> CascadeManifest:
        if self.router is None and len(self.branches) != 1:
            raise ValueError(
                f"a cascade without a router has one model; got branches {sorted(self.branches)}"
            )
        if self.router is not None and set(self.branches) != set(self.router.branches):
            raise ValueError(
                f"branches {sorted(self.branches)} must be exactly the router's branches "
                f"{sorted(self.router.branches)}"
            )
        if "router" in self.branches:
            raise ValueError("'router' names the router's role; choose another branch name")
        spec = InputSpec.from_dict(self.input_spec)  # a malformed spec raises ConfigError here
        if self.event_time_field is not None and self.event_time_field not in spec.names:
            raise ValueError(f"event_time_field {self.event_time_field!r} is not an input field")
        return self

    def spec(self) -> InputSpec:
        """The union input spec the gateway validates requests against."""
        return InputSpec.from_dict(self.input_spec)

    def model_tags(self) -> dict[str, str]:
        """Role → model tag: ``router`` (when there is one) and one entry per branch."""
        return ({"router": self.router.tag} if self.router else {}) | self.branches

    @property
    def online_features(self) -> tuple[str, ...]:
        """Names of the fields fetched from the feature store, not sent by clients."""
        return tuple(self.feature_refs)


def union_specs(specs: Sequence[InputSpec]) -> InputSpec:
    """One spec that satisfies every model: fields merged by name, nullable only if all allow it.

    Online-feature defaults come from the first spec that has the feature — pass the
    router's first: it was profiled on every training row, a specialist only on its branch.
    """
    fields: dict[str, FieldSpec] = {}
    online: dict[str, OnlineFeature] = {}
    keys = {spec.entity_key for spec in specs if spec.entity_key}
    if len(keys) > 1:
        raise ConfigError(
            f"The cascade's models use different entity keys: {sorted(keys)}.", field="entity_key"
        )
    for spec in specs:
        for field in spec:
            fields[field.name] = _merge_field(fields.get(field.name), field)
        for feature in spec.online_features:
            known = online.setdefault(feature.name, feature)
            if known.ref != feature.ref:
                raise ConfigError(
                    f"Online feature {feature.name!r} maps to {known.ref!r} in one model and "
                    f"{feature.ref!r} in another; one cascade needs one definition.",
                    field=feature.name,
                )
    return InputSpec(
        fields=tuple(fields.values()),
        entity_key=next(iter(keys), None),
        online_features=tuple(online.values()),
    )


def _merge_field(known: FieldSpec | None, field: FieldSpec) -> FieldSpec:
    if known is None:
        return field
    if known.kind != field.kind:
        raise ConfigError(
            f"Field {field.name!r} is {known.kind} in one model and {field.kind} in another.",
            field=field.name,
        )
    categories = tuple(sorted(set(known.categories) | set(field.categories)))
    return FieldSpec(
        field.name, field.kind, nullable=known.nullable and field.nullable, categories=categories
    )


def compose_manifest(
    name: str,
    *,
    branches: Mapping[str, str],
    router_tag: str | None = None,
    routes: Mapping[str, str] | None = None,
    threshold: float | None = None,
    positive_class: str | None = None,
    threshold_reason: str = "",
    metrics: Mapping[str, Any] | None = None,
    **fields: Any,
) -> CascadeManifest:
    """A candidate manifest over stored models, its input spec the union of theirs (router first).

    ``routes`` maps the router's classes to ``branches``; without ``router_tag`` the cascade is
    the one model in ``branches``. The task is the specialists' (they must agree; a router must
    be a classifier). ``fields`` sets the other manifest fields (``reference``, ``monitoring``,
    ``feature_project``, ``feature_ttl_seconds``, ``entity_key_type``, ``event_time_field``).
    """
    router = load_model(router_tag) if router_tag is not None else None
    specialists = {branch: load_model(tag) for branch, tag in branches.items()}
    task = _task_of(name, router, specialists)
    spec = union_specs([m.spec for m in (router, *specialists.values()) if m is not None])
    try:
        return CascadeManifest(
            name=name,
            task=task,
            router=None
            if router is None
            else RouterRef(
                tag=router.tag,
                routes=dict(routes or {}),
                threshold=threshold,
                positive_class=positive_class,
                threshold_reason=threshold_reason,
            ),
            branches={branch: model.tag for branch, model in specialists.items()},
            entity_key=spec.entity_key,
            feature_refs={feature.name: feature.ref for feature in spec.online_features},
            input_spec=spec.to_dict(),
            metrics=dict(metrics or {}),
            **fields,
        )
    except ValidationError as exc:
        raise ConfigError(f"The cascade manifest for {name!r} is invalid: {_first_error(exc)}") from exc


def _task_of(name: str, router: StoredModel | None, specialists: Mapping[str, StoredModel]) -> Task:
    tasks = {branch: model.task for branch, model in specialists.items()}
    if len(set(tasks.values())) != 1:
        raise ConfigError(
            f"Cascade {name!r}: its models answer different tasks ({tasks}); one cascade answers one.",
            field="branches",
        )
    if router is not None and router.task != "classification":
        raise ConfigError(
            f"Cascade {name!r}: the router {router.tag} is a {router.task} model; a router must be a "
            "classifier (its classes pick the branch).",
            field="router",
        )
    task: Task = next(iter(tasks.values()))
    return task


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where + ': ' if where else ''}{first['msg']}"


def save_manifest(manifest: CascadeManifest) -> str:
    """Store the manifest as ``cascade-{name}:<version>``; a ``champion`` is promoted right after."""
    if manifest.status == "retired":
        raise ConfigError("A manifest cannot be saved as retired; save it as a candidate.", field="status")
    data = manifest.model_dump_json(exclude={"tag"}, indent=1).encode()
    digest = hashlib.sha256(data).hexdigest()
    with bentoml.models.create(
        f"cascade-{manifest.name}",
        module=MODULE,
        labels={"kind": "cascade", "status": manifest.status},
        metadata={"sha256": {MANIFEST_FILE: digest}, "cascade": manifest.name},
    ) as model:
        Path(model.path_of(MANIFEST_FILE)).write_bytes(data)
    make_readable(str(model.tag))
    tag = str(model.tag)
    if manifest.status == "champion":
        promote(tag)
    return tag


def load_manifest(tag: str) -> CascadeManifest:
    """Read a manifest, verify its sha256, and fill in its tag and current status."""
    try:
        model = model_store().get(tag)
    except (NotFound, ValueError) as exc:
        raise ModelNotFoundError(f"No cascade manifest {tag!r} in the model store.", field="cascade") from exc
    if model.info.module != MODULE:
        raise ArtifactError(f"Model {model.tag} is not a cascade manifest (module {model.info.module!r}).")
    digests = model.info.metadata.get("sha256")
    digest = digests.get(MANIFEST_FILE) if isinstance(digests, dict) else None
    try:
        data = Path(model.path_of(MANIFEST_FILE)).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"Cascade manifest {model.tag} lacks {MANIFEST_FILE}.") from exc
    if not isinstance(digest, str) or hashlib.sha256(data).hexdigest() != digest:
        raise ArtifactError(
            f"Cascade manifest {model.tag}: {MANIFEST_FILE} does not match its recorded sha256; "
            "it was changed after saving. Refusing it; save the manifest again."
        )
    try:
        manifest = CascadeManifest.model_validate_json(data)
    except (ValidationError, ConfigError) as exc:
        raise ArtifactError(f"Cascade manifest {model.tag} is malformed: {exc}") from exc
    full_tag = str(model.tag)
    return manifest.model_copy(update={"tag": full_tag, "status": _status(manifest.name, full_tag)})


def list_manifests(name: str | None = None) -> list[str]:
    """Tags of stored cascade manifests (of one cascade, or all), newest first."""
    try:
        models = model_store().list(f"cascade-{name}" if name else None)
    except NotFound:
        return []
    models = [m for m in models if m.info.module == MODULE]
    models.sort(key=lambda m: m.info.creation_time, reverse=True)
    return [str(m.tag) for m in models]


def promote(tag: str) -> CascadeManifest:
    """Make the (verified) manifest its cascade's champion; the previous champion becomes retired.

    With a model export configured, the manifest and its models are exported first and the
    alias records each archive's sha256, so no replica sees an alias whose models it cannot get.
    """
    manifest = load_manifest(tag)
    full_tag = str(manifest.tag)
    shared = sharing()
    archives = {}
    if shared.export is not None:
        archives = export_models(shared.export, [full_tag, *manifest.model_tags().values()])

    def succeed(previous: Alias | None) -> Alias:
        retired = [t for t in (previous.retired if previous else []) if t != full_tag]
        if previous is not None and previous.champion != full_tag:
            retired.append(previous.champion)
        return Alias(champion=full_tag, promoted_at=datetime.now(UTC), retired=retired, archives=archives)

    shared.aliases.update(manifest.name, succeed)
    return manifest.model_copy(update={"status": "champion"})


def champion_names() -> list[str]:
    """The names of the cascades that have a champion, sorted."""
    return sorted(sharing().aliases.names())


def champion_tag(name: str) -> str | None:
    """The champion's tag, cheap enough to poll: one read of the alias, no manifest load."""
    alias = sharing().aliases.get(name)
    return alias.champion if alias else None


def previous_champion(name: str) -> str | None:
    """The tag of the champion before the current one (the last retired), for a rollback."""
    alias = sharing().aliases.get(name)
    return alias.retired[-1] if alias is not None and alias.retired else None


def champion(name: str) -> CascadeManifest | None:
    """The champion manifest of cascade ``name``, verified; None when none was promoted.

    Models the local store lacks are imported from the model export first, each archive
    checked against the sha256 the alias records.
    """
    shared = sharing()
    alias = shared.aliases.get(name)
    if alias is None:
        return None
    import_missing(shared.export, alias.archives)
    try:
        return load_manifest(alias.champion)
    except ModelNotFoundError as exc:
        raise ArtifactError(
            f"The champion alias of cascade {name!r} points at {alias.champion!r}, which is not in the "
            "model store; promote another manifest, or set SKEWGUARD_MODEL_EXPORT where it was exported."
        ) from exc


def _status(name: str, tag: str) -> Status:
    alias = sharing().aliases.get(name)
    if alias is not None and alias.champion == tag:
        return "champion"
    if alias is not None and tag in alias.retired:
        return "retired"
    return "candidate"
