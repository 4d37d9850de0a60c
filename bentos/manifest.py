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
from skewguard.bentos.store import load_model, make_readable, model_store
from skewguard.errors import ArtifactError, ConfigError, ModelNotFoundError

MANIFEST_FILE = "manifest.json"
MODULE = "skewguard.cascade"
NAME_PATTERN = r"^[a-z0-9]([-._a-z0-9]{0,53}[a-z0-9])?$"  # so that cascade-{name} is a valid tag
ModelTag = Annotated[str, Field(pattern=r"^[^:\s]+:[^:\s]+$")]
Status = Literal["candidate", "champion", "retired"]


class RouterRef(BaseModel):
    """The router model and its rule: P(class 1) >= threshold → ``positive_branch``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: ModelTag
    threshold: float = Field(gt=0.0, lt=1.0)
    threshold_reason: str = ""
    positive_branch: str = "reseller"
    negative_branch: str = "retail"

    @staticmethod
    def positive_probability(probabilities: Mapping[str, float]) -> float:
        """The router's P(class "1") in a ``{class: probability}`` answer, else its last class's."""
        p = probabilities.get("1")
        return float(p if p is not None else list(probabilities.values())[-1])

    def branch_for(self, probability: float) -> str:
        """The branch a row goes to, given the router's P(class 1)."""
        return self.positive_branch if probability >= self.threshold else self.negative_branch


class CascadeManifest(BaseModel):
    """One cascade version as stored; ``tag`` and ``status`` are filled in when it is loaded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    router: RouterRef
    branches: dict[str, ModelTag]
    entity_key: str | None = None
    feature_refs: dict[str, str] = Field(default_factory=dict)
    input_spec: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    status: Status = "candidate"
    tag: str | None = None

    @model_validator(mode="after")
    def _branches_match_router(self) -> CascadeManifest:
        routed = {self.router.positive_branch, self.router.negative_branch}
        if len(routed) != 2 or set(self.branches) != routed:
            raise ValueError(
                f"branches {sorted(self.branches)} must be exactly the router's two branches {sorted(routed)}"
            )
        InputSpec.from_dict(self.input_spec)  # a malformed spec raises ConfigError here
        return self

    def spec(self) -> InputSpec:
        """The union input spec the gateway validates requests against."""
        return InputSpec.from_dict(self.input_spec)

    def model_tags(self) -> dict[str, str]:
        """Role → model tag: ``router`` and one entry per branch."""
        return {"router": self.router.tag, **self.branches}


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
    router_tag: str,
    threshold: float,
    branches: Mapping[str, str],
    metrics: Mapping[str, Any] | None = None,
    threshold_reason: str = "",
    positive_branch: str = "reseller",
    negative_branch: str = "retail",
) -> CascadeManifest:
    """A candidate manifest over stored models, its input spec the union of theirs (router first)."""
    router, *specialists = (load_model(tag) for tag in (router_tag, *branches.values()))
    spec = union_specs([router.spec, *(model.spec for model in specialists)])
    try:
        return CascadeManifest(
            name=name,
            router=RouterRef(
                tag=router.tag,
                threshold=threshold,
                threshold_reason=threshold_reason,
                positive_branch=positive_branch,
                negative_branch=negative_branch,
            ),
            branches={branch: model.tag for branch, model in zip(branches, specialists, strict=True)},
            entity_key=spec.entity_key,
            feature_refs={feature.name: feature.ref for feature in spec.online_features},
            input_spec=spec.to_dict(),
            metrics=dict(metrics or {}),
        )
    except ValidationError as exc:
        raise ConfigError(f"The cascade manifest for {name!r} is invalid: {exc}") from exc


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


def champion_tag(name: str) -> str | None:
    """The champion's tag, cheap enough to poll: one read of the alias, no manifest load."""
    alias = sharing().aliases.get(name)
    return alias.champion if alias else None


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
