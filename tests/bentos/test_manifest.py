"""The cascade manifest: read back verified, tamper refused, one champion per cascade at a time."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import bentoml
import pytest
from returns_data import generate_demo_data
from returns_models import (
    ENTITY_KEY,
    FEATURE_VIEW,
    ONLINE,
    feature_columns,
)

from skewguard.bentos.manifest import (
    ALIASES_FILE,
    MANIFEST_FILE,
    CascadeManifest,
    RouterRef,
    champion,
    champion_tag,
    compose_manifest,
    list_manifests,
    load_manifest,
    promote,
    save_manifest,
    union_specs,
)
from skewguard.bentos.spec import FieldSpec, InputSpec, OnlineFeature
from skewguard.bentos.store import list_models
from skewguard.errors import ArtifactError, ConfigError
from tests.conftest import package_cascade_models

SPEC = InputSpec(fields=(FieldSpec("price", "numeric", nullable=False),), entity_key="customer_id")


@pytest.fixture(scope="module")
def model_tags() -> dict[str, str]:
    """A router and two specialists, packaged for real (small data, linear heads)."""
    return package_cascade_models(generate_demo_data(n_orders=3_000, n_customers=300, seed=5), "manifest")


def _name() -> str:
    return f"m{uuid.uuid4().hex[:8]}"


def _manifest(name: str, threshold: float = 0.5) -> CascadeManifest:
    return CascadeManifest(
        name=name,
        router=RouterRef(tag="router:v1", threshold=threshold),
        branches={"reseller": "reseller:v1", "retail": "retail:v1"},
        entity_key="customer_id",
        input_spec=SPEC.to_dict(),
        metrics={"cascade": {"overall": {"roc_auc": 0.8}}},
    )


def test_composed_manifest_round_trips_with_the_union_spec(model_tags: dict[str, str]) -> None:
    name = _name()
    manifest = compose_manifest(
        name,
        router_tag=model_tags["router"],
        threshold=0.42,
        threshold_reason="max F1",
        branches={"reseller": model_tags["reseller"], "retail": model_tags["retail"]},
        metrics={"cascade": {"overall": {"roc_auc": 0.71, "log_loss": None}}},
    )
    tag = save_manifest(manifest)
    assert tag.startswith(f"cascade-{name}:")
    loaded = load_manifest(tag)
    assert loaded.tag == tag
    assert loaded.status == "candidate"
    assert loaded.model_copy(update={"tag": None}) == manifest
    assert loaded.model_tags() == {"router": model_tags["router"], **manifest.branches}
    assert loaded.router.threshold == 0.42
    assert loaded.entity_key == ENTITY_KEY
    assert loaded.feature_refs == {feature: f"{FEATURE_VIEW}:{feature}" for feature in ONLINE}
    assert set(loaded.spec().names) == set(feature_columns())
    assert bentoml.models.get(tag).info.labels == {"kind": "cascade", "status": "candidate"}
    assert tag not in list_models()  # manifests are not packaged models
    with pytest.raises(ArtifactError, match="not a cascade manifest"):
        load_manifest(model_tags["router"])


def test_union_spec_merges_domains_and_refuses_conflicts() -> None:
    a = InputSpec(
        fields=(FieldSpec("channel", "categorical", categories=("app",)), FieldSpec("x", "numeric")),
        entity_key="customer_id",
        online_features=(OnlineFeature("x", "stats:x", 1.0),),
    )
    b = InputSpec(
        fields=(
            FieldSpec("channel", "categorical", categories=("web",)),
            FieldSpec("x", "numeric", nullable=False),
        ),
        entity_key="customer_id",
        online_features=(OnlineFeature("x", "stats:x", 2.0),),
    )
    union = union_specs([a, b])
    assert union.get("channel").categories == ("app", "web")
    assert union.get("x").nullable is False
    assert union.online_features == (OnlineFeature("x", "stats:x", 1.0),)  # the first spec's default
    clash = InputSpec(fields=(FieldSpec("x", "text"),))
    with pytest.raises(ConfigError, match="'x'"):
        union_specs([a, clash])
    moved = InputSpec(fields=a.fields, online_features=(OnlineFeature("x", "other:x", 1.0),))
    with pytest.raises(ConfigError, match="other:x"):
        union_specs([a, moved])


def test_tampered_manifest_is_refused() -> None:
    tag = save_manifest(_manifest(_name()))
    path = Path(bentoml.models.get(tag).path_of(MANIFEST_FILE))
    path.write_text(path.read_text().replace('"threshold": 0.5', '"threshold": 0.05'))
    with pytest.raises(ArtifactError, match="sha256"):
        load_manifest(tag)
    with pytest.raises(ArtifactError, match="sha256"):
        promote(tag)  # a tampered manifest never becomes champion


def test_promote_moves_the_alias_and_retires_the_old_champion() -> None:
    name = _name()
    first, second = save_manifest(_manifest(name, 0.4)), save_manifest(_manifest(name, 0.6))
    assert champion(name) is None
    assert promote(first).status == "champion"
    assert champion_tag(name) == first
    promoted = promote(f"cascade-{name}:latest")  # aliases resolve to the concrete version
    assert promoted.tag == second
    current = champion(name)
    assert current is not None
    assert (current.tag, current.status, current.router.threshold) == (second, "champion", 0.6)
    assert load_manifest(first).status == "retired"
    assert promote(first).status == "champion"  # roll back
    assert load_manifest(second).status == "retired"
    assert load_manifest(first).status == "champion"
    home = Path(bentoml.models.get(first).path).parents[2]
    assert json.loads((home / ALIASES_FILE).read_text())["cascades"][name]["champion"] == first
    assert not list(home.glob(f".{ALIASES_FILE}.*"))  # no temporary file left behind


def test_saving_a_champion_promotes_it_and_cascades_are_listed_newest_first() -> None:
    name = _name()
    candidate = save_manifest(_manifest(name))
    crowned = save_manifest(_manifest(name).model_copy(update={"status": "champion"}))
    assert champion_tag(name) == crowned
    assert list_manifests(name) == [crowned, candidate]
    assert list_manifests(_name()) == []
    with pytest.raises(ConfigError, match="retired"):
        save_manifest(_manifest(name).model_copy(update={"status": "retired"}))


def test_unknown_cascade_has_no_champion() -> None:
    assert champion(_name()) is None
    assert champion_tag(_name()) is None


def test_branches_must_match_the_router() -> None:
    with pytest.raises(ValueError, match="branches"):
        CascadeManifest(
            name="returns",
            router=RouterRef(tag="router:v1", threshold=0.5),
            branches={"reseller": "a:v1", "wholesale": "b:v1"},
            input_spec=SPEC.to_dict(),
        )


def test_a_reader_polling_the_alias_never_sees_a_torn_file() -> None:
    name = _name()
    tags = [save_manifest(_manifest(name)) for _ in range(2)]
    promote(tags[0])
    seen: set[str | None] = set()
    done = threading.Event()

    def poll() -> None:
        while True:
            seen.add(champion_tag(name))
            if done.is_set():
                return

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(30):
            promote(tags[i % 2])
    finally:
        done.set()
        reader.join()
    assert seen
    assert seen <= set(tags)
