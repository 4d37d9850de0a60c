"""The train_cascade Prefect flow on a cascade file, end to end on real Feast, Prefect and the model store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from returns_data import generate_demo_data

from skewguard.bentos.manifest import champion, load_manifest
from skewguard.bentos.store import has_model, load_model, model_store
from skewguard.pipeline.flows import train_cascade
from tests.conftest import returns_project, write_cascade_file

EXPENSIVE = {
    "build_training_set",
    "router_out_of_fold",
    "fit_router",
    "fit_branches",
    "fit_baselines",
    "evaluate_cascade",
    "package[router]",
    "package[reseller]",
    "package[retail]",
}
ROUTER_SIDE = {"build_training_set", "router_out_of_fold", "fit_router", "package[router]"}
LINEAR = {"pipeline": "returns_models:make_linear"}


def _timed_run(file: Path) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    result = train_cascade(file)
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], float]]:
    home = tmp_path_factory.mktemp("flow-home")
    project = returns_project(home / "project", generate_demo_data(n_orders=3_000, n_customers=300, seed=3))
    file = project / "cascade.yaml"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKEWGUARD_HOME", str(home))
        first = _timed_run(file)
        second = _timed_run(file)
        write_cascade_file(project, branches={"reseller": LINEAR, "retail": LINEAR})
        changed = _timed_run(file)
        patch.setattr("skewguard.pipeline.flows.packaging_fingerprint", lambda: "a changed converter")
        repackaged = _timed_run(file)
        patch.setattr("skewguard.pipeline.flows.packaging_fingerprint", lambda: "yet another converter")
        wiped = _timed_run(file)  # models of its own, for the next step to lose
        model_store().delete(wiped[0]["models"]["router"])  # the store wiped, Prefect's cache kept
        restored = _timed_run(file)
    return {
        "first": first,
        "second": second,
        "changed": changed,
        "repackaged": repackaged,
        "wiped": wiped,
        "restored": restored,
        "home": ({"path": str(home)}, 0.0),
    }


@pytest.mark.slow
def test_first_run_produces_a_champion_cascade_whose_models_pass_parity(runs: dict[str, Any]) -> None:
    result, _ = runs["first"]
    home = Path(runs["home"][0]["path"])
    assert result["status"] == "champion"
    assert set(result["task_states"].values()) == {"Completed"}
    current = champion("returns")
    assert current is not None
    assert current.tag == result["manifest"]
    assert set(current.model_tags()) == {"router", "reseller", "retail"}
    for tag in current.model_tags().values():
        assert load_model(tag).parity["passed"] is True
    for system in ("cascade", "monolithic", "true_label_cascade"):
        assert 0.5 < current.metrics[system]["overall"]["roc_auc"] <= 1.0
    assert current.metrics["threshold"]["value"] == current.router.threshold == 0.5  # type: ignore[union-attr]
    assert (current.entity_key, current.feature_project) == ("customer_id", "skewguard_returns")
    assert set(current.feature_refs.values()) == {
        "customer_stats:orders_30d",
        "customer_stats:return_rate_90d",
        "customer_stats:account_age_days",
    }
    assert current.feature_ttl_seconds == dict.fromkeys(current.feature_refs, 30 * 86_400.0)
    assert (current.event_time_field, current.target, current.task) == (
        "order_ts",
        "returned",
        "classification",
    )
    reference = current.reference
    assert reference is not None
    assert (home / reference.path).is_file()  # relative to the home, which may move
    assert (reference.time_column, reference.holdout, reference.rows) == ("order_ts", 0.2, 3_000)
    assert current.source_file == str(home / "project" / "cascade.yaml")
    assert (home / "feast" / "skewguard_returns" / "registry.db").is_file()


@pytest.mark.slow
def test_second_run_reuses_every_expensive_step(runs: dict[str, Any]) -> None:
    (first, first_seconds), (second, second_seconds) = runs["first"], runs["second"]
    cached = {task for task, state in second["task_states"].items() if state == "Cached"}
    assert cached == EXPENSIVE
    assert second["models"] == first["models"]
    assert second["figures"] == first["figures"]
    assert load_manifest(second["manifest"]).status == "candidate"
    print(f"first run {first_seconds:.1f} s, cached run {second_seconds:.1f} s")  # shown with -s, not judged


@pytest.mark.slow
def test_changed_packaging_code_packages_again_and_fits_nothing(runs: dict[str, Any]) -> None:
    (changed, _), (repackaged, _) = runs["changed"], runs["repackaged"]
    states = repackaged["task_states"]
    packaged = {"package[router]", "package[reseller]", "package[retail]"}
    assert {task for task in EXPENSIVE - packaged if states[task] == "Cached"} == EXPENSIVE - packaged
    assert {task for task in packaged if states[task] == "Completed"} == packaged
    assert set(repackaged["models"].values()).isdisjoint(changed["models"].values())
    for tag in repackaged["models"].values():
        assert load_model(tag).parity["passed"] is True


@pytest.mark.slow
def test_a_changed_branch_pipeline_reruns_only_what_depends_on_it(runs: dict[str, Any]) -> None:
    changed, _ = runs["changed"]
    states = changed["task_states"]
    assert {task for task in ROUTER_SIDE if states[task] == "Cached"} == ROUTER_SIDE
    rerun = {"fit_branches", "fit_baselines", "evaluate_cascade", "package[reseller]", "package[retail]"}
    assert {task for task in rerun if states[task] == "Completed"} == rerun
    assert changed["models"]["router"] == runs["first"][0]["models"]["router"]
    assert changed["models"]["retail"] != runs["first"][0]["models"]["retail"]


@pytest.mark.slow
def test_a_cached_package_whose_model_left_the_store_packages_again(runs: dict[str, Any]) -> None:
    (wiped, _), (restored, _) = runs["wiped"], runs["restored"]
    states = restored["task_states"]
    assert states["package[router]"] == "Completed"
    assert (states["package[reseller]"], states["package[retail]"]) == ("Cached", "Cached")
    assert not has_model(wiped["models"]["router"])
    assert restored["models"]["router"] != wiped["models"]["router"]
    manifest = load_manifest(restored["manifest"])
    for tag in manifest.model_tags().values():  # every model the new manifest names is there
        assert load_model(tag).parity["passed"] is True
