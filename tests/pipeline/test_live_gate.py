"""The live gate end to end on real components: Prefect, Feast, the model store, a gateway process.

The returns example as a project of the test's own → train the champion → serve → drifted
traffic arrives and its labels follow → ``retrain --shadow-for`` trains a candidate on the
drifted data, which passes offline and is attached as a shadow → the gateway runs it beside
the champion on new traffic → its labels arrive → ``skewguard compare`` shows both → the next
``retrain --shadow-for`` judges the shadow and promotes it. Then a candidate trained on
shuffled labels — which passes packaging (the parity gate) all the same — is attached as a
shadow by hand, meets traffic, and is refused by the live gate: the champion stays.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from returns_data import DriftKnobs, generate_demo_data
from returns_traffic import append_labeled, fresh_orders, send_orders

from skewguard.bentos.manifest import champion_tag, load_manifest
from skewguard.bentos.variants import variant_of
from skewguard.pipeline.flows import train_cascade
from skewguard.pipeline.retrain import read_decisions, retrain_if_drifted
from skewguard.settings import Settings
from tests.conftest import materialize_returns_features, returns_project, write_cascade_file
from tests.pipeline.test_scenario import _free_port

NAME = "livegate"
TOKEN = "live-gate-token-0d2c"
AUTH = {"authorization": f"Bearer {TOKEN}"}
KNOBS = DriftKnobs(price_inflation=1.6, unseen_category_share=0.3, vocabulary_shift=0.5)
LIVE = 1_000
"""Requests the shadow must answer before it is judged."""
LABELED = 2_000
"""Labeled requests sent while the better candidate shadows the champion: its gain's interval clears 0."""
WATCH = ("price", "quantity", "category", "channel", "description")

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("live-gate-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKEWGUARD_HOME", str(folder))
        patch.setenv("SKEWGUARD_CASCADES", NAME)
        patch.setenv("SKEWGUARD_WATCH_SECONDS", "0.5")
        patch.setenv("SKEWGUARD_API_TOKEN", TOKEN)
        patch.setenv("SKEWGUARD_SHADOW_MAX_LOAD", "1")  # the shadow runs every copy, even on a busy machine
        patch.setenv("SKEWGUARD_SHADOW_MAX_INFLIGHT", "0")
        yield folder


@pytest.fixture(scope="module")
def project(home: Path) -> Path:
    folder = returns_project(home / "project", generate_demo_data(n_orders=4_000, n_customers=400, seed=0))
    write_cascade_file(folder, name=NAME)
    return folder


@pytest.fixture(scope="module")
def gateway(home: Path, project: Path) -> Iterator[str]:
    """The champion trained from the file, its features materialized, then a real gateway process."""
    assert train_cascade(project / "cascade.yaml")["status"] == "champion"
    materialize_returns_features(Settings.from_env(), f"skewguard_{NAME}", project)
    port = _free_port()
    log = (home / "gateway.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "skewguard", "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _ready(url), 120, f"gateway ready ({home / 'gateway.log'})")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s: {what}")
        time.sleep(0.2)


def _served(url: str) -> dict[str, Any]:
    [cascade] = httpx.get(f"{url}/v1/cascades", headers=AUTH).json()["cascades"]
    return dict(cascade)


def _shadow_serving(url: str, tag: str) -> bool:
    variant = _served(url)["variant"]
    return variant is not None and variant["version"] == tag and variant["serving"]


def _skewguard(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "skewguard", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _live_retrain(**options: Any) -> dict[str, Any]:
    return retrain_if_drifted(NAME, watch=WATCH, live_for=str(LIVE), token=TOKEN, **options)  # default rules


def _traffic_with_labels(url: str, data: Path, seed: int, n: int) -> Any:
    """Drifted orders sent to the gateway, then their labels added to the labeled history."""
    batch = fresh_orders(data, n_orders=n, days=14, seed=seed, knobs=KNOBS)
    sent = send_orders(url, NAME, batch.orders, token=TOKEN)
    append_labeled(data, batch)
    return sent


def _shuffled_cascade_file(project: Path) -> Path:
    """The project's cascade file reading a copy of its data whose return labels are shuffled."""
    orders = pd.read_parquet(project / "data" / "orders.parquet")
    orders["returned"] = np.random.default_rng(7).permutation(orders["returned"].to_numpy())
    orders.to_parquet(project / "data" / "orders-shuffled.parquet")
    data = yaml.safe_load((project / "cascade.yaml").read_text())["data"]
    return write_cascade_file(
        project, "cascade-shuffled.yaml", data=data | {"path": "data/orders-shuffled.parquet"}
    )


@pytest.fixture(scope="module")
def story(home: Path, project: Path, gateway: str) -> dict[str, Any]:
    """Run the story once; the tests below read its chapters."""
    data, chapters = project / "data", {"champion": champion_tag(NAME)}
    drifted = fresh_orders(data, n_orders=3_000, days=28, seed=2, knobs=KNOBS)
    first_half = drifted.orders.sort_values("order_ts").iloc[:1_500]
    chapters["drifted_sent"] = send_orders(gateway, NAME, first_half, token=TOKEN)
    append_labeled(data, drifted)
    materialize_returns_features(Settings.from_env(), f"skewguard_{NAME}", project)

    chapters["attached"] = _live_retrain(gateway_url=gateway)
    candidate = chapters["attached"].get("candidate")
    _until(lambda: _shadow_serving(gateway, candidate), 30, "the gateway serves the shadow")
    early = fresh_orders(data, n_orders=50, days=1, seed=5, knobs=KNOBS)  # their labels never come
    send_orders(gateway, NAME, early.orders, token=TOKEN)
    time.sleep(1.0)  # the log writes within its flush interval
    chapters["too_early"] = _live_retrain()
    chapters["live_sent"] = _traffic_with_labels(gateway, data, seed=3, n=LABELED)
    chapters["compare"] = _skewguard("compare", NAME)
    print(chapters["compare"])
    chapters["compare_json"] = json.loads(_skewguard("compare", NAME, "--json"))
    chapters["promoted"] = _live_retrain(gateway_url=gateway)
    _until(lambda: _served(gateway)["version"] == candidate, 30, "the gateway serves the promoted candidate")
    chapters["after_promotion"] = _served(gateway)

    shuffled = train_cascade(_shuffled_cascade_file(project))
    chapters["shuffled"] = shuffled
    _skewguard("cascade", "shadow", NAME, shuffled["manifest"])
    _until(
        lambda: _shadow_serving(gateway, shuffled["manifest"]), 30, "the gateway serves the shuffled shadow"
    )
    chapters["shuffled_sent"] = _traffic_with_labels(gateway, data, seed=4, n=LIVE + 200)
    chapters["refused"] = _live_retrain(gateway_url=gateway)
    _until(lambda: _served(gateway)["variant"] is None, 30, "the gateway detaches the refused shadow")
    chapters["after_refusal"] = _served(gateway)
    chapters["decisions"] = read_decisions(home)
    return chapters


def test_a_candidate_that_passes_offline_is_attached_as_a_shadow_not_promoted(story: dict[str, Any]) -> None:
    attached = story["attached"]
    assert attached["decision"] == "shadowing", attached["reasons"]
    assert attached["drift"]["verdict"] is True
    assert attached["live"]["mode"] == "shadow"
    assert champion_tag(NAME) != attached["candidate"] or story["promoted"]["decision"] == "promoted"
    too_early = story["too_early"]
    assert too_early["decision"] == "waiting"
    assert too_early["reasons"][0].startswith("the shadow answered 50 requests in ")
    assert too_early["reasons"][0].endswith(" of 1000 requests")


def test_compare_shows_both_variants_on_the_same_requests(story: dict[str, Any]) -> None:
    assert story["live_sent"].statuses == {200: LABELED}
    text = story["compare"]
    assert "agreement:" in text
    assert "gain in roc_auc" in text
    found = story["compare_json"]
    assert found["mode"] == "shadow"
    assert found["paired_rows"] >= LIVE
    assert found["candidate"]["version"] == story["attached"]["candidate"]
    assert found["labeled_rows"] == LABELED  # every label joined by customer and order time
    assert set(found["champion"]["routes"]) <= {"reseller", "retail"}
    assert found["champion"]["latency_p99_ms"] > 0


def test_the_live_gate_promotes_the_better_shadow_and_the_gateway_serves_it(story: dict[str, Any]) -> None:
    promoted = story["promoted"]
    assert promoted["decision"] == "promoted", promoted["reasons"]
    gate = promoted["live"]["gate"]
    assert gate["status"] == "pass"
    gain = next(c for c in gate["checks"] if c["rule"] == "metric_gain")
    assert gain["figure"] > 0
    comparison = promoted["live"]["comparison"]
    assert comparison["gain"]["low"] > 0
    assert story["after_promotion"]["version"] == story["attached"]["candidate"]
    assert story["after_promotion"]["variant"] is None


def test_a_candidate_on_shuffled_labels_passes_packaging_but_the_live_gate_refuses_it(
    story: dict[str, Any],
) -> None:
    shuffled = story["shuffled"]
    assert shuffled["status"] == "candidate"
    assert load_manifest(shuffled["manifest"]).tag == shuffled["manifest"]  # stored: packaging passed
    refused = story["refused"]
    assert refused["decision"] == "kept champion", refused["reasons"]
    assert refused["candidate"] == shuffled["manifest"]
    failed = [c["rule"] for c in refused["live"]["gate"]["checks"] if c["status"] == "fail"]
    assert "metric_gain" in failed
    assert refused["live"]["comparison"]["gain"]["value"] < 0
    assert champion_tag(NAME) == story["promoted"]["candidate"]
    assert variant_of(NAME) is None
    assert story["after_refusal"]["version"] == story["promoted"]["candidate"]


def test_every_decision_is_recorded_with_its_figures(story: dict[str, Any]) -> None:
    decisions = story["decisions"]
    assert [d["decision"] for d in decisions] == ["shadowing", "waiting", "promoted", "kept champion"]
    for decision in decisions[2:]:
        assert decision["live"]["gate"]["checks"]
        assert decision["live"]["comparison"]["paired_rows"] >= LIVE
