"""Inference benchmark: scikit-learn pipelines against their packaged ONNX graphs.

    .venv/bin/python bench/inference.py [--orders N] [--seconds S]

Trains the demo "returns" model, packages it through the parity gate into a throw-away
BentoML home, reads the graph back from the store and times, in one process and one run:

(a) ``pipeline.predict_proba`` on a one-row frame and on 1,000-row frames;
(b) the graph in onnxruntime (``skewguard.bentos.parity.make_session`` / ``run_onnx``) on the same rows;
(c) the serving path of one JSON-like row: ``encode_rows`` (validation, base64 image decode) + (b);
(d) what serving with scikit-learn would do: decode the image, build the frame, (a).

Beside it, the same (a) and (b), single rows and 1,000-row batches, for two everyday
pipelines packaged as written: a regressor (``StandardScaler`` + ``HistGradientBoostingRegressor``
on scikit-learn's diabetes data, ``predict``) and a text classifier with the default
``TfidfVectorizer()`` + ``LogisticRegression`` on multilingual reviews (accents, CJK, Arabic,
Hebrew, emoji).

Both sides run on one thread. Ratios are taken between numbers of the same run; the
absolute figures depend on the machine, which is printed with them.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/inference.py`: bench (and the example) from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    import bench  # noqa: F401 - puts the returns example's modules on the path

import argparse
import base64
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from returns_data import generate_demo_data
from returns_models import (
    ENTITY_KEY,
    FEATURE_VIEW,
    IMAGE,
    ONLINE,
    TIMESTAMP,
    feature_columns,
    make_pipeline,
    split_by_time,
    training_frame,
)
from threadpoolctl import threadpool_info, threadpool_limits

from skewguard.bentos.images import decode_base64_image
from skewguard.bentos.inputs import Batch, encode_frame, encode_rows
from skewguard.bentos.parity import make_session, run_graph, run_onnx
from skewguard.bentos.spec import InputSpec

BATCH_ROWS = 1_000
ROUNDS = 4
"""Each variant's time is split into rounds run in turn, so a drifting clock speed hits all alike."""
WARMUP_CALLS = 50
TARGET_SPEEDUP = 100.0
"""The target for (b) vs (a) on single rows of the demo model."""
Proba = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Variant:
    """One timed call: what it is, the function, and the distinct inputs it cycles through."""

    label: str
    call: Callable[[Any], Proba]
    inputs: Sequence[Any]
    rows_per_call: int = 1


@dataclass(frozen=True, slots=True)
class Timing:
    """Latency percentiles of one variant, and the rows per second they amount to."""

    calls: int
    p50_us: float
    p99_us: float
    mean_us: float
    rows_per_s: float

    @classmethod
    def from_ns(cls, samples: Sequence[int], rows_per_call: int) -> Timing:
        us = np.asarray(samples, dtype=np.float64) / 1e3
        mean = float(us.mean())
        p50, p99 = (float(v) for v in np.percentile(us, [50, 99]))
        return cls(len(us), p50, p99, mean, rows_per_call * 1e6 / mean)


@dataclass(frozen=True, slots=True)
class Fixture:
    """The fitted pipeline, the stored graph's session and spec, and the rows to feed them."""

    pipeline: Any
    session: Any
    spec: InputSpec
    X: pd.DataFrame
    raw_rows: list[dict[str, Any]]
    parity: dict[str, Any]
    n_train: int


@contextmanager
def isolated_bentoml_home() -> Iterator[None]:
    """A temporary BentoML home for this run: the user's model store is never read or written."""
    saved = {key: os.environ.get(key) for key in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK")}
    with tempfile.TemporaryDirectory(prefix="skewguard-bench-") as home:
        os.environ["BENTOML_HOME"] = home
        os.environ["BENTOML_DO_NOT_TRACK"] = "true"
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def build_fixture(n_orders: int) -> Fixture:
    """Train the demo model as ``train_and_package`` does, package it and read it back."""
    # Imported here, after isolated_bentoml_home has pointed BENTOML_HOME elsewhere.
    from skewguard.bentos.package import package_model
    from skewguard.bentos.store import load_model

    data = generate_demo_data(n_orders=n_orders)
    train, test = split_by_time(training_frame(data))
    columns = feature_columns()
    pipeline = make_pipeline("hgb").fit(train[columns], train["returned"])
    tag = package_model(
        pipeline,
        test[columns],
        name="returns-bench",
        y_sample=test["returned"].to_numpy(),
        X_profile=train[columns],
        entity_key=ENTITY_KEY,
        online_features={feature: f"{FEATURE_VIEW}:{feature}" for feature in ONLINE},
        labels={"head": "hgb", "target": "returned"},
    )
    stored = load_model(tag)
    pngs = dict(zip(data.orders["order_id"], data.orders[IMAGE], strict=True))
    return Fixture(
        pipeline=pipeline,
        session=make_session(stored.onnx),
        spec=stored.spec,
        X=test[columns].reset_index(drop=True),
        raw_rows=[
            _raw_row(row, pngs[order])
            for order, row in zip(test["order_id"], _records(test, columns), strict=True)
        ],
        parity=stored.parity,
        n_train=len(train),
    )


def _records(frame: pd.DataFrame, columns: list[str]) -> Iterator[dict[str, Any]]:
    for values in frame[columns].itertuples(index=False, name=None):
        yield dict(zip(columns, values, strict=True))


def _raw_row(row: dict[str, Any], png: bytes) -> dict[str, Any]:
    """The row as a client sends it: JSON values, an ISO timestamp, the photo as base64 PNG."""
    raw = {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}
    raw[TIMESTAMP] = row[TIMESTAMP].strftime("%Y-%m-%dT%H:%M:%SZ")
    raw[IMAGE] = base64.b64encode(png).decode("ascii")
    parsed: dict[str, Any] = json.loads(json.dumps(raw))  # fails loudly on a non-JSON value
    return parsed


def sklearn_frame(row: dict[str, Any], columns: Sequence[str]) -> pd.DataFrame:
    """What serving with scikit-learn needs per row: the image decoded, a typed one-row frame."""
    values = dict(row)
    values[IMAGE] = decode_base64_image(row[IMAGE])
    frame = pd.DataFrame({name: [values[name]] for name in columns})
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


def make_variants(fx: Fixture) -> dict[str, Variant]:
    """The six timed calls, keyed ``a``..``d`` for single rows and ``A``/``B`` for batches."""
    pipeline, session, spec = fx.pipeline, fx.session, fx.spec
    columns = list(fx.X.columns)
    heldout = encode_frame(spec, fx.X)
    rows = range(len(fx.X))

    def sklearn(frame: pd.DataFrame) -> Proba:
        return np.asarray(pipeline.predict_proba(frame), dtype=np.float64)

    def onnx(batch: Batch) -> Proba:
        return run_onnx(session, batch)[1]

    def serve_onnx(row: dict[str, Any]) -> Proba:
        return onnx(encode_rows(spec, [row]))

    def serve_sklearn(row: dict[str, Any]) -> Proba:
        return sklearn(sklearn_frame(row, columns))

    tiled = np.arange(BATCH_ROWS) % len(fx.X)  # held-out rows repeat if there are fewer than 1,000
    batch = f"{BATCH_ROWS:,}-row batch"
    return {
        "a": Variant("(a) sklearn predict_proba, 1 row", sklearn, [fx.X.iloc[[i]] for i in rows]),
        "b": Variant("(b) onnxruntime run_onnx, 1 row", onnx, [heldout.take(np.array([i])) for i in rows]),
        "c": Variant("(c) serving: encode_rows + run_onnx", serve_onnx, fx.raw_rows),
        "d": Variant("(d) serving: decode + DataFrame + sklearn", serve_sklearn, fx.raw_rows),
        "A": Variant(f"(a) sklearn predict_proba, {batch}", sklearn, [fx.X.iloc[tiled]], BATCH_ROWS),
        "B": Variant(f"(b) onnxruntime run_onnx, {batch}", onnx, [heldout.take(tiled)], BATCH_ROWS),
    }


REVIEW_WORDS = (
    ("café", "crème", "brûlée", "naïve", "façade", "Zürich", "smörgåsbord", "jalapeño"),
    ("東京", "北京", "日本語", "中文", "서울", "한국어", "テキスト", "漢字"),
    ("مرحبا", "السلام", "شكرا", "שלום", "עולם", "תודה", "Привет", "Москва"),
)
EMOJI = ("🚀", "🔥", "😀", "great😀", "ok👌")


@dataclass(frozen=True, slots=True)
class Everyday:
    """An everyday pipeline packaged as written: what it is, and its (a)/(b) on single rows and batches."""

    key: str
    label: str
    pipeline: Any
    session: Any
    task: str
    X: pd.DataFrame
    heldout: Batch
    parity: dict[str, Any]


def _reviews(n: int, seed: int) -> tuple[pd.DataFrame, NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    texts = []
    for label in labels:
        words = [*rng.choice(REVIEW_WORDS[label], rng.integers(2, 6)), *rng.choice(EMOJI, rng.integers(0, 3))]
        texts.append(" ".join(rng.permutation(words)))
    return pd.DataFrame({"review": texts}), labels


def build_everyday() -> list[Everyday]:
    """The regressor and the default TF-IDF classifier, fitted, packaged and read back."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline as sk_pipeline
    from sklearn.preprocessing import StandardScaler

    from skewguard.bentos.inputs import encode_frame as encode
    from skewguard.bentos.package import package_model
    from skewguard.bentos.store import load_model

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    regressor = sk_pipeline(StandardScaler(), HistGradientBoostingRegressor()).fit(X.iloc[::2], y.iloc[::2])
    texts, labels = _reviews(600, 0)
    tfidf = sk_pipeline(
        ColumnTransformer([("review", TfidfVectorizer(), "review")]), LogisticRegression(max_iter=1000)
    )
    tfidf.fit(texts.iloc[:400], labels[:400])
    models = []
    for key, label, pipeline, heldout in (
        (
            "r",
            "regressor: StandardScaler + HistGradientBoostingRegressor (diabetes)",
            regressor,
            X.iloc[1::2],
        ),
        ("t", "text: TfidfVectorizer() + LogisticRegression (multilingual reviews)", tfidf, texts.iloc[400:]),
    ):
        stored = load_model(package_model(pipeline, heldout, name=f"bench-{key}", tolerance=1e-6))
        frame = heldout.reset_index(drop=True)
        session = make_session(stored.onnx)
        models.append(
            Everyday(
                key, label, pipeline, session, stored.task, frame, encode(stored.spec, frame), stored.parity
            )
        )
    return models


def everyday_variants(model: Everyday) -> dict[str, Variant]:
    """(a) and (b) of one everyday pipeline: single rows and 1,000-row batches."""
    pipeline, session, task = model.pipeline, model.session, model.task

    def sklearn(frame: pd.DataFrame) -> Proba:
        if task == "regression":
            return np.asarray(pipeline.predict(frame), dtype=np.float64)[:, None]
        return np.asarray(pipeline.predict_proba(frame), dtype=np.float64)

    def onnx(batch: Batch) -> Proba:
        return run_graph(session, batch, task)[1]

    rows = range(len(model.X))
    tiled = np.arange(BATCH_ROWS) % len(model.X)
    name = "predict" if task == "regression" else "predict_proba"
    return {
        f"{model.key}a": Variant(
            f"({model.key}a) sklearn {name}, 1 row", sklearn, [model.X.iloc[[i]] for i in rows]
        ),
        f"{model.key}b": Variant(
            f"({model.key}b) onnxruntime, 1 row", onnx, [model.heldout.take(np.array([i])) for i in rows]
        ),
        f"{model.key}A": Variant(
            f"({model.key}a) sklearn {name}, {BATCH_ROWS:,} rows", sklearn, [model.X.iloc[tiled]], BATCH_ROWS
        ),
        f"{model.key}B": Variant(
            f"({model.key}b) onnxruntime, {BATCH_ROWS:,} rows", onnx, [model.heldout.take(tiled)], BATCH_ROWS
        ),
    }


def everyday_ratios(t: dict[str, Timing], model: Everyday) -> list[tuple[str, float]]:
    k = model.key
    return [
        (f"({k}) single row p50,  (b) vs (a)", t[f"{k}a"].p50_us / t[f"{k}b"].p50_us),
        (f"({k}) {BATCH_ROWS:,}-row throughput, (b) vs (a)", t[f"{k}B"].rows_per_s / t[f"{k}A"].rows_per_s),
    ]


def _describe_everyday(model: Everyday, outputs: dict[str, Proba]) -> str:
    p = model.parity
    agree = float(np.abs(outputs[f"{model.key}a"] - outputs[f"{model.key}b"]).max())
    return (
        f"({model.key}) {model.label}: {len(model.X):,} held-out rows; parity "
        f"{'passed' if p['passed'] else 'FAILED'}, max |Δ| {p['max_abs_diff']:.3g} over "
        f"{int(p['n_heldout']) + int(p['n_probes']):,} rows; (a) vs (b) on the warm-up rows {agree:.3g}"
    )


def warm_up(variants: dict[str, Variant]) -> dict[str, Proba]:
    """Call each variant on its first inputs; their outputs show the paths agree."""
    return {key: np.concatenate([v.call(x) for x in v.inputs[:WARMUP_CALLS]]) for key, v in variants.items()}


def measure(variants: dict[str, Variant], seconds: float) -> dict[str, Timing]:
    """Time every variant for ``seconds`` in ``ROUNDS`` interleaved rounds, one call at a time."""
    samples: dict[str, list[int]] = {key: [] for key in variants}
    for _ in range(ROUNDS):
        for key, variant in variants.items():
            samples[key] += _time_calls(variant, seconds / ROUNDS, start=len(samples[key]))
    return {key: Timing.from_ns(samples[key], v.rows_per_call) for key, v in variants.items()}


def _time_calls(variant: Variant, seconds: float, *, start: int) -> list[int]:
    clock, call, inputs = time.perf_counter_ns, variant.call, variant.inputs
    deadline = clock() + int(seconds * 1e9)
    samples: list[int] = []
    i = start
    while True:
        x = inputs[i % len(inputs)]
        begin = clock()
        call(x)
        end = clock()
        samples.append(end - begin)
        i += 1
        if end >= deadline:
            return samples


def ratios(t: dict[str, Timing]) -> list[tuple[str, float]]:
    """How many times faster the ONNX side is, per figure (> 1: ONNX is faster)."""
    return [
        ("single row p50,  (b) vs (a)", t["a"].p50_us / t["b"].p50_us),
        ("single row p99,  (b) vs (a)", t["a"].p99_us / t["b"].p99_us),
        ("single row mean, (b) vs (a)", t["a"].mean_us / t["b"].mean_us),
        (f"{BATCH_ROWS:,}-row throughput, (b) vs (a)", t["B"].rows_per_s / t["A"].rows_per_s),
        ("serving row p50,  (c) vs (d)", t["d"].p50_us / t["c"].p50_us),
        ("serving row p99,  (c) vs (d)", t["d"].p99_us / t["c"].p99_us),
        ("serving row mean, (c) vs (d)", t["d"].mean_us / t["c"].mean_us),
    ]


def describe_machine() -> str:
    """CPU model, cores and the versions that shape the numbers."""
    versions = " · ".join(
        f"{name} {metadata.version(name)}" for name in ("onnxruntime", "scikit-learn", "numpy")
    )
    return (
        f"machine: {_cpu_model()}, {os.cpu_count()} logical CPUs ({len(os.sched_getaffinity(0))} usable) · "
        f"{platform.system()} {platform.machine()} · python {platform.python_version()} · {versions}"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _describe_threads() -> str:
    pools = ", ".join(sorted({f"{p['user_api']} {p['num_threads']}" for p in threadpool_info()}))
    return (
        "threads: onnxruntime intra-op 1, inter-op 1 (bentos.parity.make_session); "
        f"scikit-learn held to 1 with threadpoolctl ({pools or 'no native pools loaded'})"
    )


def _describe_model(fx: Fixture, n_orders: int) -> list[str]:
    p = fx.parity
    checked = int(p["n_heldout"]) + int(p["n_probes"])
    return [
        f"model: demo returns pipeline (hgb head) from {n_orders:,} orders: "
        f"{fx.n_train:,} training rows, {len(fx.X):,} held-out rows",
        f"parity: {'passed' if p['passed'] else 'FAILED'}, max |Δp| {p['max_abs_diff']:.3g} over "
        f"{checked:,} rows ({p['n_heldout']:,} held-out + {p['n_probes']:,} probes), "
        f"tolerance {p['tolerance']:g}, {p['n_label_mismatches']} label mismatches",
    ]


def format_table(variants: dict[str, Variant], timings: dict[str, Timing]) -> list[str]:
    head = f"{'variant':<44}{'calls':>8}{'p50 µs':>12}{'p99 µs':>12}{'mean µs':>12}{'rows/s':>12}"
    lines = [head, "-" * len(head)]
    for key, v in variants.items():
        t = timings[key]
        lines.append(
            f"{v.label:<44}{t.calls:>8,}{t.p50_us:>12,.1f}{t.p99_us:>12,.1f}"
            f"{t.mean_us:>12,.1f}{t.rows_per_s:>12,.0f}"
        )
    return lines


def run(n_orders: int, seconds: float) -> list[str]:
    """The whole benchmark; returns the report's lines."""
    started = time.perf_counter()
    with isolated_bentoml_home():
        fx = build_fixture(n_orders)
        everyday = build_everyday()
    variants = make_variants(fx)
    for model in everyday:
        variants.update(everyday_variants(model))
    setup_s = time.perf_counter() - started
    load_before = os.getloadavg()[0]
    with threadpool_limits(limits=1):
        outputs = warm_up(variants)
        threads = _describe_threads()
        timings = measure(variants, seconds)
    measure_s = time.perf_counter() - started - setup_s
    load = f"load average (1 min): {load_before:.2f} before measuring, {os.getloadavg()[0]:.2f} after"
    single = ratios(timings)
    met = "met" if single[0][1] >= TARGET_SPEEDUP else "not met"
    pairs = (("b", "a"), ("c", "b"), ("d", "a"))
    agree = {pair: float(np.abs(outputs[pair[0]] - outputs[pair[1]]).max()) for pair in pairs}
    return [
        "skewguard inference benchmark: scikit-learn pipeline (a) vs packaged ONNX graph (b)",
        describe_machine(),
        f"{load}, on {os.cpu_count()} CPUs (this benchmark alone accounts for about 1)",
        threads,
        *_describe_model(fx, n_orders),
        *(_describe_everyday(model, outputs) for model in everyday),
        f"timing: time.perf_counter_ns per call; single rows cycle through {len(fx.X):,} distinct held-out "
        f"rows after {WARMUP_CALLS} warm-up calls; {seconds:g} s per variant in {ROUNDS} interleaved rounds",
        "",
        *format_table(variants, timings),
        "",
        "ratios from this run (× = how many times faster the ONNX side is):",
        *(f"  {name:<36}{value:>9.1f}×" for name, value in single),
        *(
            f"  {name:<36}{value:>9.1f}×"
            for model in everyday
            for name, value in everyday_ratios(timings, model)
        ),
        f"target: (b) ≥ {TARGET_SPEEDUP:g}× faster than (a) on single rows (p50): {met}",
        "check, max |Δp| on the warm-up rows: "
        + ", ".join(f"({x}) vs ({y}) {diff:.3g}" for (x, y), diff in agree.items()),
        f"runtime: setup {setup_s:.1f} s (data, fit, packaging, inputs), measuring {measure_s:.1f} s",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=20_000, help="demo orders to generate (20,000)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per variant (2 s)")
    args = parser.parse_args(argv)
    if args.orders < 100 or args.seconds <= 0:
        parser.error("--orders must be at least 100 and --seconds positive.")
    print("\n".join(run(args.orders, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
