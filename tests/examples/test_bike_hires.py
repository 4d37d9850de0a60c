"""The bike-hires example end to end, beside the returns cascade in one gateway.

A user's two projects (copies of the examples, small data): each cascade file trained by the
flow, each cascade's features materialized in its own Feast project, one real gateway process
serving both (every cascade with a champion), traffic sent to both, the regression cascade's
served traffic monitored (warmer days: its temperature drifts) and retrained.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hires_data import append_hires, fresh_hires, request_row, write_example_data
from returns_data import generate_demo_data
from returns_data import request_row as returns_row

from skewguard.bentos.manifest import champion
from skewguard.cli import cli
from skewguard.pipeline.flows import train_cascade
from skewguard.pipeline.retrain import read_decisions, retrain_if_drifted
from tests.conftest import EXAMPLES, returns_project, write_cascade_file
from tests.gateway.test_server import Server, _free_port, _launch, _stop, _wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]
LINEAR = {"pipeline": "returns_models:make_linear"}
SERVED = 400
BESIDE = "returns-beside"
"""The returns example under a name of its own: the session's model store is shared by every test."""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("two-cascades")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKEWGUARD_HOME", str(folder))
        patch.delenv("SKEWGUARD_CASCADES", raising=False)
        patch.delenv("SKEWGUARD_API_TOKEN", raising=False)
        yield folder


@pytest.fixture(scope="module")
def files(home: Path) -> dict[str, Path]:
    """Both projects trained from their files and their features materialized, as a user runs them."""
    result = CliRunner().invoke(
        cli, ["examples", "copy", "bike-hires", str(home / "hires"), "--rows", "3000"]
    )
    assert result.exit_code == 0, result.output
    returns = returns_project(home / "returns", generate_demo_data(n_orders=2_000, n_customers=200, seed=4))
    router = {
        "pipeline": LINEAR["pipeline"],
        "target": "is_reseller",
        "threshold": 0.5,
        "routes": {1: "reseller", 0: "retail"},
    }
    beside = write_cascade_file(
        returns, name=BESIDE, router=router, branches={"reseller": LINEAR, "retail": LINEAR}
    )
    found = {"bike-hires": home / "hires" / "cascade.yaml", BESIDE: beside}
    for file in found.values():
        assert train_cascade(file)["status"] == "champion"
        done = CliRunner().invoke(cli, ["features", "materialize", "-f", str(file)])
        assert done.exit_code == 0, done.output
    return found


@pytest.fixture(scope="module")
def gateway(home: Path, files: dict[str, Path]) -> Iterator[Server]:
    port = _free_port()
    env = {**os.environ, "SKEWGUARD_PORT": str(port), "SKEWGUARD_WATCH_SECONDS": "0.5"}
    env["SKEWGUARD_CASCADES"] = ",".join(files)  # the session's store holds other tests' cascades too
    server = _launch(
        [sys.executable, "-m", "skewguard", "serve"],
        env,
        home / "gateway.log",
        f"http://127.0.0.1:{port}",
        home,
    )
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(server)


def _post(server: Server, name: str, rows: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/cascades/{name}/predict", json={"rows": rows}, timeout=30)


def test_one_gateway_serves_every_cascade_with_its_own_features(
    gateway: Server, files: dict[str, Path]
) -> None:
    listed = {c["name"]: c for c in httpx.get(f"{gateway.url}/v1/cascades").json()["cascades"]}
    assert {"bike-hires", BESIDE} <= set(listed)
    assert (listed["bike-hires"]["task"], listed["bike-hires"]["entity_key"]) == ("regression", "station_id")
    assert (listed[BESIDE]["task"], listed[BESIDE]["entity_key"]) == ("classification", "customer_id")
    assert set(listed["bike-hires"]["online_features"]) == {"hires_7d", "mean_duration_7d", "long_share_7d"}
    bike, returns = champion("bike-hires"), champion(BESIDE)
    assert bike is not None
    assert returns is not None
    assert bike.feature_project != returns.feature_project


def test_the_regression_cascade_answers_minutes_routed_by_its_router(
    gateway: Server, files: dict[str, Path]
) -> None:
    import pandas as pd

    hires = pd.read_parquet(files["bike-hires"].parent / "data" / "hires.parquet").sort_values("start_time")
    rows = [request_row(hire) for hire in hires.tail(40).to_dict("records")]
    rows[0] = {**rows[0], "station_id": 9_999}  # a station the store does not know
    response = _post(gateway, "bike-hires", rows)
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert all(isinstance(a["prediction"], float) and "probabilities" not in a for a in answers)
    assert all(2.0 < a["prediction"] < 240.0 for a in answers[1:])
    assert {a["route"] for a in answers} <= {"long", "short"}
    assert answers[0]["defaults_used"] is True
    assert answers[0]["skew_flags"][0]["kind"] == "unknown_entity"
    assert not any(a["defaults_used"] for a in answers[1:])
    assert answers[1]["versions"]["router"].startswith("bike-hires-router:")
    bad = _post(gateway, "bike-hires", [{**rows[1], "station_id": "1001"}])
    assert (bad.status_code, bad.json()["field"]) == (422, "station_id")


def test_the_classification_cascade_still_answers_probabilities(
    gateway: Server, files: dict[str, Path]
) -> None:
    import pandas as pd

    orders = pd.read_parquet(files[BESIDE].parent / "data" / "orders.parquet").sort_values("order_ts")
    response = _post(gateway, BESIDE, [returns_row(order) for order in orders.tail(5).to_dict("records")])
    assert response.status_code == 200, response.text
    assert all(set(a["probabilities"]) == {"0", "1"} for a in response.json()["predictions"])


@pytest.fixture(scope="module")
def story(home: Path, files: dict[str, Path], gateway: Server) -> dict[str, Any]:
    """Warmer days served; their durations arrive later; the monitor and the retraining flow run."""
    folder = files["bike-hires"].parent / "data"
    warm = fresh_hires(folder, n_hires=SERVED, days=10, seed=3, warmer=8.0)
    rows = [request_row(hire) for hire in warm.hires.to_dict("records")]
    statuses = [_post(gateway, "bike-hires", rows[i : i + 20]).status_code for i in range(0, len(rows), 20)]
    append_hires(folder, warm)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "skewguard",
            "monitor",
            "bike-hires",
            "--out",
            str(home / "report"),
            "--min-rows",
            "200",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ.copy(),
    )
    decision = retrain_if_drifted("bike-hires", min_rows=200, margin=0.0, gateway_url=gateway.url)
    return {"statuses": statuses, "monitor": done, "decision": decision, "decisions": read_decisions(home)}


def test_warmer_days_are_seen_as_drift_in_the_report(story: dict[str, Any], home: Path) -> None:
    assert set(story["statuses"]) == {200}
    monitor = story["monitor"]
    assert monitor.returncode == 1, monitor.stdout + monitor.stderr  # 1: drift
    assert "temperature_c" in monitor.stdout
    assert (home / "report" / "drift-report.html").stat().st_size > 50_000


def test_the_retraining_flow_trains_a_regression_candidate_and_decides_by_its_error(
    story: dict[str, Any],
) -> None:
    decision = story["decision"]
    assert decision["metric"] == "mae"
    assert decision["decision"] in {"promoted", "kept champion"}
    comparison = decision["comparison"]
    assert comparison["window"]["rows"] > 0
    assert {"mae", "rmse", "r2"} <= set(comparison["candidate"])
    assert story["decisions"][-1]["cascade"] == "bike-hires"


def test_the_example_folder_is_a_project_on_its_own(tmp_path: Path) -> None:
    """Nothing of the examples needs installing: the files beside the cascade file are enough."""
    write_example_data(tmp_path / "data", rows=500)
    assert (tmp_path / "data" / "hires.parquet").is_file()
    assert (EXAMPLES / "bike-hires" / "feature_repo" / "station_stats.py").is_file()
