"""A cascade's variant: kept in the champion alias, replaced, detached, cleared by promoting."""

from __future__ import annotations

import uuid

import pytest

from skewguard.bentos.aliases import configured
from skewguard.bentos.manifest import CascadeManifest, RouterRef, champion_tag, promote, save_manifest
from skewguard.bentos.spec import FieldSpec, InputSpec
from skewguard.bentos.variants import attach_variant, detach_variant, variant_manifest, variant_of
from skewguard.errors import ConfigError

SPEC = InputSpec(fields=(FieldSpec("price", "numeric", nullable=False),), entity_key="customer_id")
ROUTES = {"1": "reseller", "0": "retail"}
REDIS = "redis://127.0.0.1:6379/0"


def _name() -> str:
    return f"v{uuid.uuid4().hex[:8]}"


def _version(name: str, threshold: float = 0.5) -> str:
    manifest = CascadeManifest(
        name=name,
        router=RouterRef(tag="router:v1", routes=ROUTES, threshold=threshold, positive_class="1"),
        branches={"reseller": "reseller:v1", "retail": "retail:v1"},
        entity_key="customer_id",
        input_spec=SPEC.to_dict(),
    )
    return save_manifest(manifest)


def test_a_shadow_is_attached_beside_the_champion_and_detached() -> None:
    name = _name()
    first, second = _version(name, 0.4), _version(name, 0.6)
    promote(first)
    assert variant_of(name) is None
    variant = attach_variant(name, second, "shadow", 0.25)
    assert (variant.mode, variant.tag, variant.fraction, variant.champion) == ("shadow", second, 0.25, first)
    assert variant_of(name) == variant
    assert champion_tag(name) == first  # the champion is untouched
    assert variant_manifest(variant).router.threshold == 0.6  # type: ignore[union-attr]
    assert detach_variant(name) == variant
    assert variant_of(name) is None
    assert detach_variant(name) is None  # nothing left to detach


def test_attaching_another_variant_replaces_the_first() -> None:
    name = _name()
    first, second, third = _version(name, 0.4), _version(name, 0.5), _version(name, 0.6)
    promote(first)
    attach_variant(name, second, "shadow", 1.0)
    canary = attach_variant(name, third, "canary", 0.1)
    assert variant_of(name) == canary


def test_a_promotion_clears_the_variant_so_it_never_outlives_its_champion() -> None:
    name = _name()
    first, second = _version(name, 0.4), _version(name, 0.6)
    promote(first)
    attach_variant(name, second, "canary", 0.2)
    promote(second)
    assert variant_of(name) is None
    attach_variant(name, first, "shadow", 0.5)
    promote(first)  # a rollback too
    assert variant_of(name) is None


@pytest.mark.parametrize(
    ("mode", "fraction", "field"),
    [
        ("shadow", 0.0, "fraction"),
        ("shadow", 1.5, "fraction"),
        ("canary", 1.0, "share"),
        ("canary", -0.1, "share"),
    ],
)
def test_a_fraction_out_of_range_is_refused_naming_it(mode: str, fraction: float, field: str) -> None:
    name = _name()
    first, second = _version(name, 0.4), _version(name, 0.6)
    promote(first)
    with pytest.raises(ConfigError) as caught:
        attach_variant(name, second, mode, fraction)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert variant_of(name) is None


def test_the_champion_itself_another_cascade_or_no_champion_is_refused() -> None:
    name, other = _name(), _name()
    first, second = _version(name, 0.4), _version(name, 0.6)
    foreign = _version(other)
    with pytest.raises(ConfigError, match="no champion"):
        attach_variant(name, second, "shadow", 1.0)
    promote(first)
    with pytest.raises(ConfigError, match="already the champion"):
        attach_variant(name, first, "shadow", 1.0)
    with pytest.raises(ConfigError, match=f"not of {name!r}"):
        attach_variant(name, foreign, "shadow", 1.0)
    assert variant_of(name) is None


@pytest.mark.integration
def test_the_variant_lives_where_the_alias_lives() -> None:
    name = _name()
    first, second = _version(name, 0.4), _version(name, 0.6)
    with configured(f"{REDIS}?namespace=t{uuid.uuid4().hex[:10]}"):
        promote(first)
        variant = attach_variant(name, second, "shadow", 0.5)
        assert variant_of(name) == variant
    assert variant_of(name) is None  # the local alias file never saw it
