"""Everyday pipelines, as written, through `skewguard package` and `skewguard bento serve`.

The three pipelines a new user tries first (StandardScaler + HistGradientBoosting and
StandardScaler + RandomForest on breast_cancer; numbers, a category and accented text
with the default TfidfVectorizer + LogisticRegression on wine) and one regressor are
pickled, packaged with the CLI (which prints the per-step report), served by the real
``bentoml serve`` the CLI starts, and asked over HTTP: the answers are the pipeline's own
``predict_proba`` / ``predict``, to the last few bits.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.bentos.test_service import _free_port, _wait_ready

SKEWGUARD = [sys.executable, "-m", "skewguard"]
NOTES = ("café", "crème brûlée", "naïve", "rosé", "Château", "élégant", "fruité", "Zürich", "İstanbul")
CLOSE = 1e-12


def _breast_cancer() -> tuple[pd.DataFrame, Any]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X, y.to_numpy()


def _wine() -> tuple[pd.DataFrame, Any]:
    X, y = load_wine(return_X_y=True, as_frame=True)
    rng = np.random.default_rng(0)
    notes = [" ".join(rng.choice(NOTES, rng.integers(1, 5))) for _ in range(len(X))]
    return X.assign(region=rng.choice(["north", "south", "east"], len(X)), notes=notes), y.to_numpy()


def _wine_pipeline(X: pd.DataFrame) -> Any:
    numbers = [c for c in X.columns if c not in ("region", "notes")]
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), numbers),
            ("region", OneHotEncoder(handle_unknown="ignore"), ["region"]),
            ("notes", TfidfVectorizer(), "notes"),
        ]
    )
    return make_pipeline(columns, LogisticRegression(max_iter=5000))


def _diabetes() -> tuple[pd.DataFrame, Any]:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X, y.to_numpy()


PIPELINES: dict[str, tuple[Callable[[], tuple[pd.DataFrame, Any]], Callable[[pd.DataFrame], Any]]] = {
    "scaled-hist-boosting": (
        _breast_cancer,
        lambda X: make_pipeline(StandardScaler(), HistGradientBoostingClassifier()),
    ),
    "scaled-forest": (
        _breast_cancer,
        lambda X: make_pipeline(StandardScaler(), RandomForestClassifier(random_state=0)),
    ),
    "wine-with-notes": (_wine, _wine_pipeline),
    "diabetes-regressor": (
        _diabetes,
        lambda X: make_pipeline(StandardScaler(), HistGradientBoostingRegressor()),
    ),
}


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SKEWGUARD, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=600
    )


@pytest.fixture(scope="module", params=list(PIPELINES))
def packaged(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Any, pd.DataFrame, str]:
    """(tag, fitted pipeline, held-out rows, the printed report) of a pipeline `skewguard package` stored."""
    name = str(request.param)
    load, build = PIPELINES[name]
    X, y = load()
    pipeline = build(X).fit(X.iloc[::2], y[::2])
    heldout = X.iloc[1::2].iloc[:60].reset_index(drop=True)
    folder = tmp_path_factory.mktemp(name)
    (folder / "pipeline.pkl").write_bytes(pickle.dumps(pipeline))
    heldout.to_parquet(folder / "sample.parquet")
    args = ["package", "--pipeline", str(folder / "pipeline.pkl"), "--sample", str(folder / "sample.parquet")]
    done = _run([*args, "--name", name, "--tolerance", "1e-6"])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return lines[-1], pipeline, heldout, "\n".join(lines[:-1])


@pytest.fixture(scope="module")
def served(
    packaged: tuple[str, Any, pd.DataFrame, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """`skewguard bento serve --model <tag>` on a free port (it builds the Bento and runs bentoml serve)."""
    tag = packaged[0]
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*SKEWGUARD, "bento", "serve", "--model", tag, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _json_rows(X: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in X.to_dict("records")
    ]


@pytest.mark.integration
def test_the_cli_reports_every_step_and_its_difference(packaged: tuple[str, Any, pd.DataFrame, str]) -> None:
    tag, pipeline, _, report = packaged
    assert f"{tag} (" in report
    assert "): packaged;" in report
    for name, step in pipeline.steps:
        assert any(line.startswith(name) and type(step).__name__ in line for line in report.splitlines())


@pytest.mark.integration
def test_the_served_model_answers_what_the_pipeline_answers(
    packaged: tuple[str, Any, pd.DataFrame, str], served: httpx.Client
) -> None:
    tag, pipeline, heldout, _ = packaged
    response = served.post("/predict", json={"rows": _json_rows(heldout)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == tag
    predictions = body["predictions"]
    if hasattr(pipeline, "predict_proba"):
        expected = pipeline.predict_proba(heldout)
        got = np.array([[p["probabilities"][str(c)] for c in pipeline.classes_] for p in predictions])
        assert np.abs(got - expected).max() <= CLOSE
        assert [p["label"] for p in predictions] == pipeline.predict(heldout).tolist()
    else:
        got = np.array([p["prediction"] for p in predictions])
        assert (
            np.abs(got - pipeline.predict(heldout)).max() <= CLOSE * np.abs(pipeline.predict(heldout)).max()
        )
