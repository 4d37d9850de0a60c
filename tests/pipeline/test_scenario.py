"""The returns example end to end on real components: Prefect, Feast, the model store, a gateway, Evidently.

Its cascade file in a project of the test's own → train → serve normal traffic through a real
gateway process → the monitor finds no drift →
serve drifted traffic (price inflation, an unseen category, a vocabulary shift) → the monitor
flags the shifted columns and not the others → retrain → the candidate beats the champion on
the newest labeled window and is promoted → the gateway serves it. Then a candidate that
cannot clear an impossible margin is not promoted.

The verdict watches the request fields: the demo's customer statistics evolve by design
(accounts age, return rates trend), so the online features drift against a half-year
training window even without the knobs (normed Wasserstein 0.18-0.36 measured on the demo
data); they are still checked and reported.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from returns_data import DriftKnobs, generate_demo_data
from returns_traffic import append_labeled, fresh_orders, send_orders

from skewguard.bentos.manifest import champion_tag
from skewguard.pipeline.flows import train_cascade
from skewguard.pipeline.retrain import read_decisions, retrain_if_drifted
from skewguard.settings import Settings
from tests.conftest import materialize_returns_features, returns_project, write_cascade_file

NAME = "scenario"
WATCH = (
    "price",
    "quantity",
    "category",
    "channel",
    "order_ts_hour",
    "description",
    "image_brightness",
    "image_contrast",
)
SHIFTED = {"price", "category", "description"}
# The knob "unseen category" brings drone photos too: their statistics may move with it.
MAY_FOLLOW = {"image_brightness", "image_contrast"}
SERVED = 1_500
TOKEN = "scenario-token-5b1e9c"
KNOBS = DriftKnobs(price_inflation=1.6, unseen_category_share=0.3, vocabulary_shift=0.5)

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("scenario-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKEWGUARD_HOME", str(folder))
        patch.setenv("SKEWGUARD_CASCADES", NAME)
        patch.setenv("SKEWGUARD_WATCH_SECONDS", "0.5")
        patch.setenv("SKEWGUARD_API_TOKEN", TOKEN)  # the promotion's reload calls admin, closed without
        yield folder


@pytest.fixture(scope="module")
def project(home: Path) -> Path:
    """The returns example as a user's project of its own, renamed: its data, its cascade file."""
    folder = returns_project(home / "project", generate_demo_data(n_orders=4_000, n_customers=400, seed=0))
    write_cascade_file(folder, name=NAME)
    return folder


@pytest.fixture(scope="module")
def gateway(home: Path, project: Path) -> Iterator[str]:
    """The champion trained from the file, its features materialized, then a real gateway process."""
    first = train_cascade(project / "cascade.yaml")
    assert first["status"] == "champion"
    materialize_returns_features(Settings.from_env(), f"skewguard_{NAME}", project)
    port = _free_port()
    log = (home / "skewguard.gateway.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "skewguard", "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"gateway did not get ready: {(home / 'skewguard.gateway.log').read_text()[-3000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def story(home: Path, project: Path, gateway: str) -> dict[str, Any]:
    """Run the scenario once; the tests below read its chapters."""
    settings = Settings.from_env()
    data = project / "data"
    monitor = {"name": NAME, "last": SERVED, "watch": WATCH, "token": TOKEN}  # as the CLI passes it
    chapters: dict[str, Any] = {"champion": champion_tag(NAME)}

    normal = fresh_orders(data, n_orders=SERVED, days=14, seed=1)
    chapters["normal_sent"] = send_orders(gateway, NAME, normal.orders, token=TOKEN)
    chapters["normal"] = retrain_if_drifted(**monitor)
    append_labeled(data, normal)  # their labels arrive; the feature pipeline materializes the new stats
    materialize_returns_features(settings, f"skewguard_{NAME}", project)

    drifted = fresh_orders(data, n_orders=2 * SERVED, days=28, seed=2, knobs=KNOBS)
    first_half = drifted.orders.sort_values("order_ts").iloc[:SERVED]
    chapters["drifted_sent"] = send_orders(gateway, NAME, first_half, token=TOKEN)
    append_labeled(data, drifted)
    chapters["drifted"] = retrain_if_drifted(**monitor, gateway_url=gateway)
    chapters["after"] = httpx.get(
        f"{gateway}/v1/cascades", headers={"authorization": f"Bearer {TOKEN}"}
    ).json()
    chapters["served_after"] = send_orders(gateway, NAME, first_half.iloc[:20], token=TOKEN)

    chapters["impossible"] = retrain_if_drifted(**monitor, force=True, margin=1.0, gateway_url=gateway)
    chapters["decisions"] = read_decisions(home)
    return chapters


def _drifted_columns(decision: dict[str, Any], scope: str = "overall") -> set[str]:
    return set(decision["drift"]["drifted_columns"][scope])


def test_normal_traffic_is_served_and_not_called_drift(story: dict[str, Any]) -> None:
    assert story["normal_sent"].statuses == {200: SERVED}
    normal = story["normal"]
    assert normal["drift"]["verdict"] is False, normal["drift"]["reasons"]
    assert normal["decision"] == "no retrain"
    assert not _drifted_columns(normal) & set(WATCH)
    assert champion_tag(NAME) == story["champion"] or story["drifted"]["decision"] == "promoted"


def test_drifted_traffic_flags_the_shifted_columns_and_not_the_others(story: dict[str, Any]) -> None:
    assert story["drifted_sent"].statuses == {200: SERVED}
    drifted = story["drifted"]
    assert drifted["drift"]["verdict"] is True
    flagged = _drifted_columns(drifted) & set(WATCH)
    assert flagged >= SHIFTED, flagged
    assert flagged <= SHIFTED | MAY_FOLLOW, flagged - SHIFTED
    assert not flagged & {"quantity", "channel", "order_ts_hour"}


def test_the_better_candidate_is_promoted_and_served(story: dict[str, Any]) -> None:
    drifted = story["drifted"]
    assert drifted["decision"] == "promoted", drifted["reasons"]
    comparison = drifted["comparison"]
    assert comparison["candidate"]["roc_auc"] >= comparison["champion"]["roc_auc"] + drifted["margin"]
    new = drifted["candidate"]
    assert new != story["champion"]
    assert champion_tag(NAME) != story["champion"]
    served = {c["name"]: c for c in story["after"]["cascades"]}[NAME]
    assert served["version"] == new
    assert story["served_after"].statuses == {200: 20}
    for response in story["served_after"].responses:
        versions = response["predictions"][0]["versions"]
        assert versions["cascade"] == new
        assert versions["router"] == served["models"]["router"]


def test_a_candidate_that_does_not_clear_the_margin_is_not_promoted(story: dict[str, Any]) -> None:
    impossible = story["impossible"]
    assert impossible["decision"] == "kept champion"
    assert "does not beat the margin 1" in impossible["reasons"][0]
    assert champion_tag(NAME) == story["drifted"]["candidate"]


def test_every_decision_is_recorded_with_its_reasons(story: dict[str, Any]) -> None:
    decisions = story["decisions"]
    assert [d["decision"] for d in decisions] == ["no retrain", "promoted", "kept champion"]
    for decision in decisions:
        assert decision["reasons"]
        assert decision["cascade"] == NAME
    promoted = decisions[1]
    assert promoted["comparison"]["window"]["rows"] > 0
    assert promoted["drift"]["reasons"]
