"""The ONNX runner and the Bento service: raw rows in, the stored graph's predictions out.

The fast tests drive ``OnnxRunner`` on a small multimodal model packaged once per module.
The ``integration`` tests build that model's Bento, start the real ``bentoml serve`` and
check over HTTP that it answers what the runner answers, and that every kind of bad input
is a 4xx naming the field — after which the server still answers a good request.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skewguard.bentos.bento import build_bento, serve_command
from skewguard.bentos.images import encode_png
from skewguard.bentos.inputs import encode_rows
from skewguard.bentos.package import package_model
from skewguard.bentos.runner import OnnxRunner
from skewguard.bentos.store import load_model
from skewguard.bentos.transforms import ImageFeatures
from skewguard.errors import ArtifactError, ImageError, InputError, ModelOutputError, PayloadTooLargeError

WORDS = ("red", "blue", "mug", "cup", "broken", "great", "late", "fine")
N_ROWS = 500
STARTUP_TIMEOUT = 60.0


def make_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "price": np.round(rng.lognormal(3, 0.8, n), 2),
            "quantity": rng.integers(1, 6, n).astype(np.float64),
            "channel": rng.choice(["web", "app", "b2b"], n),
            "review": [" ".join(rng.choice(WORDS, rng.integers(1, 6))) for _ in range(n)],
            "photo": list(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
        }
    )


def make_pipeline() -> Pipeline:
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["price", "quantity"]),
            ("channel", OneHotEncoder(handle_unknown="ignore"), ["channel"]),
            ("review", TfidfVectorizer(token_pattern=r"[a-zA-Z0-9_]+"), "review"),
            ("photo", ImageFeatures(grid=2), "photo"),
        ]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=1000))])


def to_rows(X: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: JSON values, images as base64 PNG."""
    return [
        {
            "price": float(row.price),
            "quantity": float(row.quantity),
            "channel": str(row.channel),
            "review": str(row.review),
            "photo": base64.b64encode(encode_png(row.photo)).decode(),
        }
        for row in X.itertuples()
    ]


@pytest.fixture(scope="module")
def model() -> tuple[str, Pipeline, pd.DataFrame]:
    """A packaged model (tag), its fitted pipeline, and held-out rows it never saw."""
    rng = np.random.default_rng(7)
    X = make_frame(rng, N_ROWS)
    y = ((X["price"] > 20) ^ X["review"].str.contains("broken")).astype(int).to_numpy()
    pipeline = make_pipeline().fit(X.iloc[:400], y[:400])
    tag = package_model(pipeline, X.iloc[400:], name="service-demo", y_sample=y[400:])
    return tag, pipeline, make_frame(np.random.default_rng(8), 20)


@pytest.fixture(scope="module")
def runner(model: tuple[str, Pipeline, pd.DataFrame]) -> OnnxRunner:
    return OnnxRunner.load(model[0])


# --- the runner ---------------------------------------------------------------------------


def test_runner_reproduces_the_pipeline_on_raw_rows(
    model: tuple[str, Pipeline, pd.DataFrame], runner: OnnxRunner
) -> None:
    _, pipeline, X = model
    predictions = runner.predict_rows(to_rows(X))
    expected = pipeline.predict_proba(X)
    got = np.array([[p["probabilities"][str(c)] for c in pipeline.classes_] for p in predictions])
    assert np.abs(got - expected).max() < 1e-4
    assert [p["label"] for p in predictions] == pipeline.predict(X).tolist()


def test_runner_answers_json_native_labels_and_named_classes(runner: OnnxRunner) -> None:
    X = make_frame(np.random.default_rng(9), 3)
    predictions = runner.predict_rows(to_rows(X))
    assert runner.classes_ == (0, 1)
    assert all(type(p["label"]) is int for p in predictions)
    assert all(list(p["probabilities"]) == ["0", "1"] for p in predictions)
    assert json.loads(json.dumps(predictions)) == predictions


def test_runner_exposes_its_tag_and_spec(
    model: tuple[str, Pipeline, pd.DataFrame], runner: OnnxRunner
) -> None:
    assert runner.model_tag == model[0]
    assert runner.spec.names == ("price", "quantity", "channel", "review", "photo")
    assert runner.spec.get("photo").kind == "image"
    assert runner.spec.get("review").kind == "text"


def test_a_graph_answering_nan_is_an_error_naming_the_model_not_a_prediction(
    model: tuple[str, Pipeline, pd.DataFrame],
) -> None:
    class NaNSession:  # a broken graph: the real outputs, probabilities replaced by NaN
        def __init__(self, session: Any) -> None:
            self.session = session

        def run(self, names: Any, feeds: Any) -> list[Any]:
            labels, probabilities = self.session.run(names, feeds)[:2]
            return [labels, np.full_like(probabilities, np.nan)]

    broken = OnnxRunner.load(model[0])
    broken._session = NaNSession(broken._session)  # type: ignore[assignment]
    with pytest.raises(ModelOutputError, match=f"Model {broken.model_tag} answered non-finite") as caught:
        broken.predict_rows(to_rows(model[2].head(2)))
    assert caught.value.status_code == 500


def test_predict_batch_equals_predict_rows(runner: OnnxRunner) -> None:
    rows = to_rows(make_frame(np.random.default_rng(10), 4))
    assert runner.predict_batch(encode_rows(runner.spec, rows)) == runner.predict_rows(rows)


@pytest.fixture(scope="module")
def string_model() -> tuple[str, Pipeline]:
    """A second, numeric-only model with three string classes."""
    rng = np.random.default_rng(11)
    X = pd.DataFrame({"price": rng.normal(50, 20, 300), "quantity": rng.integers(1, 6, 300).astype(float)})
    y = np.where(X["price"] > 60, "return", np.where(X["quantity"] > 3, "exchange", "keep"))
    pipeline = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=1000))]).fit(X, y)
    return package_model(pipeline, X.iloc[:100], name="service-classes"), pipeline


def test_string_classes_come_from_the_graph(string_model: tuple[str, Pipeline]) -> None:
    tag, pipeline = string_model
    runner = OnnxRunner.load(tag)
    fresh = pd.DataFrame({"price": [90.0, 10.0, 45.0], "quantity": [1.0, 5.0, 2.0]})
    predictions = runner.predict_rows(fresh.to_dict("records"))
    assert runner.classes_ == ("exchange", "keep", "return")
    assert [p["label"] for p in predictions] == pipeline.predict(fresh).tolist()
    assert list(predictions[0]["probabilities"]) == ["exchange", "keep", "return"]


def _image_change(data: bytes) -> dict[str, Any]:
    return {"photo": base64.b64encode(data).decode()}


PNG = encode_png(np.zeros((32, 32, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        pytest.param({"photo": "not base64!"}, "photo", ImageError, id="non-base64"),
        pytest.param(_image_change(b"GIF89a but not really"), "photo", ImageError, id="non-image"),
        pytest.param(_image_change(PNG[: len(PNG) // 2]), "photo", ImageError, id="truncated-image"),
        pytest.param({"price": "12"}, "price", InputError, id="wrong-type"),
        pytest.param({"review": "x" * 20_000}, "review", PayloadTooLargeError, id="huge-string"),
    ],
)
def test_runner_rejects_bad_values_naming_the_field(
    runner: OnnxRunner, change: dict[str, Any], field: str, error: type[InputError]
) -> None:
    row = to_rows(make_frame(np.random.default_rng(12), 1))[0] | change
    with pytest.raises(error) as caught:
        runner.predict_rows([row])
    assert caught.value.field == field


# --- the real server ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < STARTUP_TIMEOUT:
        if process.poll() is not None:
            pytest.fail(f"bentoml serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"bentoml serve was not ready after {STARTUP_TIMEOUT} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def bento_tag(model: tuple[str, Pipeline, pd.DataFrame]) -> str:
    started = time.perf_counter()
    tag = build_bento(model[0])
    print(f"\nBento {tag} built in {time.perf_counter() - started:.1f} s")
    return tag


@pytest.fixture(scope="module")
def server(bento_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """``bentoml serve <bento>`` on a free port, run from a folder without our sources."""
    folder = tmp_path_factory.mktemp("serve")
    log = folder / "serve.log"
    port = _free_port()
    # The Bento's recorded model wins over the variable, which only serves-from-source reads.
    env = os.environ | {"SKEWGUARD_MODEL": "no-such-model:latest"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            serve_command(bento_tag, port), cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        ready = _wait_ready(f"http://127.0.0.1:{port}", process, log)
        print(f"\nBento {bento_tag} ready in {ready:.1f} s")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.integration
def test_each_bento_records_only_its_own_model(
    model: tuple[str, Pipeline, pd.DataFrame], bento_tag: str, string_model: tuple[str, Pipeline]
) -> None:
    env_before = os.environ.get("SKEWGUARD_MODEL")
    second = build_bento(string_model[0])  # same process: the service module is re-imported
    for bento, tag in ((bento_tag, model[0]), (second, string_model[0])):
        info = bentoml.bentos.get(bento).info
        assert [str(m.tag) for m in info.all_models] == [tag]
        assert info.args == {"model": tag}
        assert [(e.name, e.value) for e in info.envs] == [("SKEWGUARD_MODEL", tag)]
    assert not vars(bentoml.use_arguments())
    assert os.environ.get("SKEWGUARD_MODEL") == env_before


def _good_rows(n: int) -> list[dict[str, Any]]:
    return to_rows(make_frame(np.random.default_rng(13), n))


@pytest.mark.integration
@pytest.mark.parametrize("n_rows", [1, 3])
def test_server_answers_what_the_runner_answers(
    server: httpx.Client, runner: OnnxRunner, n_rows: int
) -> None:
    rows = _good_rows(n_rows)
    response = server.post("/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == runner.model_tag
    expected = runner.predict_rows(rows)
    assert [p["label"] for p in body["predictions"]] == [p["label"] for p in expected]
    for got, want in zip(body["predictions"], expected, strict=True):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-12)


@pytest.mark.integration
def test_server_describes_its_input_spec(server: httpx.Client, runner: OnnxRunner) -> None:
    response = server.post("/spec", json={})
    assert response.status_code == 200
    assert response.json() == {"model": runner.model_tag, "spec": runner.spec.to_dict()}


def _row(**changes: Any) -> dict[str, Any]:
    return _good_rows(1)[0] | changes


def _without(field: str) -> dict[str, Any]:
    return {k: v for k, v in _row().items() if k != field}


def _raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()  # json.dumps writes NaN / Infinity literals


def _field_of(body: Any) -> str:
    """The field a 4xx body names: ours (``field``) or BentoML's envelope check (``detail[].loc``)."""
    if isinstance(body, dict) and "field" in body:
        return str(body["field"])
    loc = body["detail"][0]["loc"]
    return ".".join(str(part) for part in loc) or "(body)"


BAD_REQUESTS = [
    pytest.param(b'{"rows": [{"price": 1.0,', 400, "(body)", id="malformed-json"),
    pytest.param(_raw({"rows": [_row(price="12.5")]}), 422, "price", id="wrong-type"),
    pytest.param(_raw({"rows": [_without("channel")]}), 422, "channel", id="missing-field"),
    pytest.param(_raw({"rows": [_row(colour="red")]}), 422, "colour", id="extra-field"),
    pytest.param(_raw({"rows": [_row(price=float("nan"))]}), 422, "price", id="nan"),
    pytest.param(_raw({"rows": [_row(quantity=float("inf"))]}), 422, "quantity", id="infinity"),
    pytest.param(_raw({"rows": [_row(review="x" * 50_000)]}), 413, "review", id="huge-string"),
    pytest.param(_raw({"rows": [_row(photo="not base64!")]}), 422, "photo", id="non-base64"),
    pytest.param(_raw({"rows": [_row(**_image_change(b"plain text"))]}), 422, "photo", id="non-image"),
    pytest.param(_raw({"rows": [_row(**_image_change(PNG[:40]))]}), 422, "photo", id="truncated-image"),
    pytest.param(_raw({"rows": []}), 422, "rows", id="empty-rows"),
    pytest.param(_raw({"rows": {"price": 1.0}}), 400, "rows", id="rows-not-a-list"),
    pytest.param(_raw({"rows": ["price"]}), 400, "rows.0", id="row-not-an-object"),
    pytest.param(_raw({"records": [_row()]}), 400, "rows", id="rows-missing"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("content", "status", "field"), BAD_REQUESTS)
def test_server_rejects_bad_input_with_a_4xx_naming_the_field(
    server: httpx.Client, content: bytes, status: int, field: str
) -> None:
    response = server.post("/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    body = response.json()
    assert _field_of(body) == field
    if field == "(body)":
        assert body["detail"][0]["type"] == "json_invalid"
    else:
        assert field.split(".")[0] in json.dumps(body)
    assert server.post("/predict", json={"rows": _good_rows(1)}).status_code == 200


# --- a regressor --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regressor() -> tuple[str, Pipeline]:
    """A packaged regressor on numbers and a category."""
    rng = np.random.default_rng(21)
    X = make_frame(rng, 300).drop(columns=["review", "photo"])
    y = 3.0 * X["price"] + 10.0 * X["quantity"] + (X["channel"] == "b2b") * 50.0 + rng.normal(0, 1, len(X))
    columns = ColumnTransformer(
        [("numbers", StandardScaler(), ["price", "quantity"]), ("channel", OneHotEncoder(), ["channel"])]
    )
    pipeline = Pipeline([("columns", columns), ("model", HistGradientBoostingRegressor(max_iter=30))]).fit(
        X, y
    )
    return package_model(pipeline, X.iloc[:60], name="service-regressor"), pipeline


def test_a_regressor_answers_numbers(regressor: tuple[str, Pipeline]) -> None:
    tag, pipeline = regressor
    runner = OnnxRunner.load(tag)
    fresh = make_frame(np.random.default_rng(22), 5).drop(columns=["review", "photo"])
    predictions = runner.predict_rows(fresh.to_dict("records"))
    assert runner.task == "regression"
    assert runner.classes_ == ()
    assert all(set(p) == {"prediction"} and type(p["prediction"]) is float for p in predictions)
    assert np.abs(np.array([p["prediction"] for p in predictions]) - pipeline.predict(fresh)).max() <= 1e-9
    assert runner.predict_batch(encode_rows(runner.spec, fresh.to_dict("records"))) == predictions


def test_a_store_record_that_contradicts_the_graph_is_refused(regressor: tuple[str, Pipeline]) -> None:
    stored = load_model(regressor[0])
    with pytest.raises(ArtifactError, match="packaged for 'regression'"):
        OnnxRunner(dataclasses.replace(stored, task="classification"))
