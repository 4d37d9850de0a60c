"""Variants of a cascade: one candidate version served beside the champion, as a shadow or a canary.

    shadow   a copy of (a fraction of) the requests runs through the candidate off the
             response path; only the champion answers; both answers are logged together
    canary   a share of the routing keys (entity keys) is answered by the candidate

The variant is part of the champion alias (``skewguard.bentos.aliases.Variant``): it is
written atomically with it, survives a reload and reaches every worker and replica the way
a promotion does; with a model export configured, the candidate's manifest and models are
exported when it is attached, and a replica imports them checked against the recorded
sha256. A promotion (or rollback) writes a new alias without it, so a variant never
outlives the champion it was compared with. One variant per cascade: attaching another
replaces it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from skewguard.bentos.aliases import Alias, Variant, VariantMode, sharing
from skewguard.bentos.exports import export_models, import_missing
from skewguard.bentos.manifest import CascadeManifest, load_manifest
from skewguard.errors import ConfigError

__all__ = ["attach_variant", "detach_variant", "variant_manifest", "variant_of"]


def attach_variant(name: str, tag: str, mode: VariantMode, fraction: float) -> Variant:
    """Attach the stored version ``tag`` of cascade ``name`` as its shadow or canary; the variant stored.

    ``fraction``: the share of requests a shadow copies (0 < f <= 1), or the share of routing
    keys a canary answers (0 < s < 1; a canary of every key is a promotion).
    """
    _check_fraction(mode, fraction)
    candidate = load_manifest(tag)  # verified: a changed manifest is refused here, not in a gateway
    if candidate.name != name:
        raise ConfigError(
            f"{candidate.tag} is a version of cascade {candidate.name!r}, not of {name!r}.", field="tag"
        )
    champion = _champion_manifest(name)
    if champion.tag == candidate.tag:
        raise ConfigError(
            f"{candidate.tag} is already the champion of {name!r}; attach another version.", field="tag"
        )
    if champion.task != candidate.task:
        raise ConfigError(
            f"{candidate.tag} answers a {candidate.task} task and the champion {champion.tag} a "
            f"{champion.task} one; a variant is compared with the champion, so both must answer the same.",
            field="tag",
        )
    shared = sharing()
    full_tag = str(candidate.tag)
    archives = {}
    if shared.export is not None:
        archives = export_models(shared.export, [full_tag, *candidate.model_tags().values()])
    variant = Variant(
        mode=mode,
        tag=full_tag,
        fraction=fraction,
        champion=str(champion.tag),
        attached_at=datetime.now(UTC),
        archives=archives,
    )

    def attach(current: Alias | None) -> Alias:
        if current is None or current.champion != variant.champion:
            raise ConfigError(
                f"The champion of {name!r} changed while {full_tag} was being attached; attach it again.",
                field="name",
            )
        return current.model_copy(update={"variant": variant})

    shared.aliases.update(name, attach)
    return variant


def detach_variant(name: str) -> Variant | None:
    """Serve the champion of ``name`` alone again; the variant that was attached (None: there was none)."""
    detached: list[Variant] = []

    def detach(current: Alias | None) -> Alias:
        if current is None:
            raise ConfigError(f"No champion cascade named {name!r}; nothing to detach.", field="name")
        if current.variant is not None:
            detached.append(current.variant)
        return current.model_copy(update={"variant": None})

    sharing().aliases.update(name, detach)
    return detached[0] if detached else None


def variant_of(name: str) -> Variant | None:
    """The variant attached to cascade ``name``; None when its champion serves alone (or it has none)."""
    alias = sharing().aliases.get(name)
    return alias.variant if alias is not None else None


def variant_manifest(variant: Variant) -> CascadeManifest:
    """The variant's candidate manifest, verified; its models imported from the model export if missing."""
    shared = sharing()
    import_missing(shared.export, variant.archives)
    return load_manifest(variant.tag)


def _champion_manifest(name: str) -> CascadeManifest:
    alias = sharing().aliases.get(name)
    if alias is None:
        raise ConfigError(
            f"Cascade {name!r} has no champion: a variant is served beside one. Promote a version first.",
            field="name",
        )
    return load_manifest(alias.champion)


def _check_fraction(mode: VariantMode, fraction: float) -> None:
    if mode == "shadow" and not 0.0 < fraction <= 1.0:
        raise ConfigError(
            f"A shadow's fraction of requests is {fraction}; expected 0 < fraction <= 1.", field="fraction"
        )
    if mode == "canary" and not 0.0 < fraction < 1.0:
        raise ConfigError(
            f"A canary's share of routing keys is {fraction}; expected 0 < share < 1 (a canary of every "
            "key is a promotion: `skewguard cascade promote`).",
            field="share",
        )
