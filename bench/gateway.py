"""Gateway benchmark: the skewguard gateway against BentoML composition and a naive app, over HTTP.

    .venv/bin/python bench/gateway.py [--seconds 10] [--concurrency 16,64] [--variants 0,1,2,3,4]
        [--orders 20000] [--loadgen auto|wrk|httpx] [--home DIR] [--quick]

In a throw-away SKEWGUARD_HOME (BENTOML_HOME and PREFECT_HOME inside it) it copies the
returns example (``skewguard examples copy``), trains its cascade file and a tabular+text
variant of it (``returns-text``, its models without the photo), materializes their features,
builds a Bento per model of the first and recovers its fitted pipelines. Then,
one variant at a time, it starts the variant's servers as subprocesses
(``bench/gateway_variants.py``), checks their answers, warms them up and drives them with
single-row requests (real demo orders, image included) from a load generator in its own
process (``bench/gateway_load.py``: wrk, or async httpx when wrk is absent), at each
concurrency:

(0) the bare stack (``bench/gateway_bare.py``): the gateway's uvicorn, as ``skewguard serve``
    runs it, with a trivial app that parses the body and answers; every gateway row is also
    reported as a ratio to it (the limit any gateway on this stack has);
(1) the gateway co-located (``skewguard serve``): validation, Feast SQLite, skew guard,
    router and specialist in onnxruntime, prediction log (SQLite); measured twice, each in
    its own gateway process: image requests on the ``returns`` cascade, and tabular+text
    requests (the same orders without the image) on ``returns-text``, whose graphs have no
    image input — the target is worded for the latter; and once more with image requests
    and a shadow attached at fraction 1.0 (a second version of ``returns``), so that the
    champion's p99 with and without a shadow come from the same run;
(2) the gateway remote: the same, SKEWGUARD_REMOTE_MODELS naming three ``bentoml serve`` Bentos;
(3) the same ONNX graphs composed the BentoML way (``bench/gateway_bentoml.py``);
(4) the naive way: Starlette, Feast and ``predict_proba`` (``bench/gateway_naive.py``).

Prints one table (2xx req/s, p50/p99, errors, 5xx, peak RSS of the server process trees),
the ratios (1)/(4) and (2)/(3) of this run, the targets and the machine. The load
generator and the servers share the machine's CPUs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/gateway.py`: import the bench package from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.gateway_report import (
    LABELS,
    LEGEND,
    Cell,
    ImageCost,
    agreement,
    bare_ratios,
    describe_machine,
    format_table,
    loadgen_caveat,
    ratios,
    targets,
)
from bench.gateway_servers import Server, sampling_rss, stop, tree_unique
from bench.gateway_variants import (
    CASCADE,
    GATEWAY_KEYS,
    TEXT_CASCADE,
    TEXT_KEYS,
    Setup,
    bodies_of,
    check_answers,
    launch,
    log_stats,
    served_cascade,
    settle,
    shadow_stats,
    to_cell,
)

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
N_BODIES = 256


@dataclass(slots=True)
class Outcome:
    """A variant's cells, its answers to the checked rows, notes, or why it failed."""

    cells: list[Cell] = field(default_factory=list)
    p1: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tools: set[str] = field(default_factory=set)
    ready_s: float | None = None
    """(1): seconds from starting `skewguard serve` to its first /readyz 200."""
    failure: str | None = None


def environment(home: Path) -> dict[str, str]:
    """This process's environment less any SKEWGUARD_* setting, pointed at ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWGUARD_", "BENTOML_CONFIG"))}
    return env | {
        "SKEWGUARD_HOME": str(home),
        "BENTOML_HOME": str(home / "bentoml"),
        "PREFECT_HOME": str(home / "prefect"),
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "LANG": "C.UTF-8",
        # Per-request access logs cost BentoML throughput; the gateway writes none either.
        "BENTOML_CONFIG_OPTIONS": "services.logging.access.enabled=false",
    }


def _run(command: Sequence[str], env: dict[str, str], log: Path) -> str:
    with log.open("ab") as sink:
        done = subprocess.run(command, env=env, cwd=log.parent, stdout=subprocess.PIPE, stderr=sink)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
    return done.stdout.decode()


def train_examples(home: Path, n_orders: int, env: dict[str, str], log: Path, *, text: bool = True) -> Path:
    """The returns example copied into ``home/project`` with ``n_orders`` orders, its cascade (and the
    tabular+text one) trained from their files, their features materialized; reused when present."""
    skewguard, project = str(BIN / "skewguard"), home / "project"
    if not (project / "cascade.yaml").exists():
        _run([skewguard, "examples", "copy", "returns", str(project), "--rows", str(n_orders)], env, log)
    files = [project / "cascade.yaml", *([text_cascade_file(project)] if text else [])]
    for file in files:
        _run([skewguard, "train", "-f", str(file), "--if-missing"], env, log)
        _run([skewguard, "features", "apply", "-f", str(file)], env, log)
        _run([skewguard, "features", "materialize", "-f", str(file)], env, log)
    return project


def text_cascade_file(project: Path) -> Path:
    """The returns cascade without the photo: its models read tabular and text fields only."""
    import yaml

    spec = yaml.safe_load((project / "cascade.yaml").read_text())
    spec["name"] = TEXT_CASCADE
    spec["data"]["columns"] = [c for c in spec["data"]["columns"] if c != "image"]
    spec["router"]["pipeline"] = "returns_models:make_text_router"
    spec["branches"] = {b: {"pipeline": "returns_models:make_text_specialist"} for b in spec["branches"]}
    path = project / "cascade-text.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def prepare(home: Path, n_orders: int) -> Setup:
    """Demo data, the trained cascades, Bentos, the fitted pipelines and the request bodies."""
    env, log = environment(home), home / "setup.log"
    project = train_examples(home, n_orders, env, log)
    build = json.loads(_run([sys.executable, str(BENCH / "gateway_bentoml.py"), "build"], env, log))
    training = max((home / "training" / "returns").glob("*.parquet"), key=lambda p: p.stat().st_mtime)
    pipelines = home / "bench-pipelines.pkl"
    naive = [sys.executable, str(BENCH / "gateway_naive.py"), "extract", "--out", str(pipelines)]
    source = _run(
        [*naive, "--storage", str(home / "prefect" / "storage"), "--training", str(training)], env, log
    )
    shadow = shadow_version(env, log)
    bodies, images = request_bodies(project / "data" / "orders.parquet", N_BODIES)
    texts = without_image(bodies)
    path, text_path = home / "bodies.jsonl", home / "bodies-text.jsonl"
    path.write_text("".join(line + "\n" for line in bodies))
    text_path.write_text("".join(line + "\n" for line in texts))
    return Setup(
        home=home,
        env=env,
        build=build,
        pipelines=pipelines,
        pipelines_source=source.strip(),
        bodies=path,
        body_bytes=sum(map(len, bodies)) / len(bodies),
        text_bodies=text_path,
        text_body_bytes=sum(map(len, texts)) / len(texts),
        image=ImageCost(sum(map(len, images)) / len(images), time_image_decode(images)),
        shadow=shadow,
    )


def shadow_version(env: dict[str, str], log: Path) -> str:
    """A second version of the image cascade over its champion's graphs (threshold 0.4): ``1s``'s shadow."""
    skewguard = str(BIN / "skewguard")
    champion = json.loads(_run([skewguard, "cascade", "show", CASCADE], env, log))
    router = champion["router"]
    command = [skewguard, "cascade", "compose", CASCADE, "--router", router["tag"], "--rule", "0.4"]
    command += ["--positive-class", str(router["positive_class"] or sorted(router["routes"])[-1])]
    command += [f"--route={cls}={branch}" for cls, branch in router["routes"].items()]
    command += [f"--branch={branch}={tag}" for branch, tag in champion["branches"].items()]
    return _run(command, env, log).split()[0]


def request_bodies(orders_file: Path, n: int) -> tuple[list[str], list[str]]:
    """``{"rows": [row]}`` of the newest ``n`` orders as a client sends them, and their images."""
    import pandas as pd
    from returns_data import request_row

    orders = pd.read_parquet(orders_file).sort_values("order_ts", kind="stable").tail(n)
    bodies, images = [], []
    for _, order in orders.iterrows():
        row = request_row(order)
        bodies.append(json.dumps({"rows": [row]}))
        images.append(row["image"])
    return bodies, images


def without_image(bodies: Sequence[str]) -> list[str]:
    """The same bodies without the image field: the tabular+text requests of ``returns-text``."""
    stripped = []
    for body in bodies:
        rows = json.loads(body)["rows"]
        stripped.append(
            json.dumps({"rows": [{k: v for k, v in row.items() if k != "image"} for row in rows]})
        )
    return stripped


def time_image_decode(images: Sequence[str], calls: int = 2_000) -> float:
    """µs per ``decode_base64_image`` call: what validating the image costs a request."""
    from skewguard.bentos.images import decode_base64_image

    started = time.perf_counter()
    for i in range(calls):
        decode_base64_image(images[i % len(images)])
    return (time.perf_counter() - started) * 1e6 / calls


def load(url: str, bodies: Path, concurrency: int, seconds: int, tool: str) -> dict[str, Any]:
    """One run of the load generator, in its own process."""
    command = [sys.executable, str(BENCH / "gateway_load.py"), "--url", url, "--bodies", str(bodies)]
    args = ["--concurrency", str(concurrency), "--seconds", str(seconds), "--tool", tool]
    done = subprocess.run([*command, *args], capture_output=True, text=True, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("LOAD-RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the load generator failed ({done.returncode}): {done.stderr[-1000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("LOAD-RESULT "))
    return result


def run_variant(key: str, setup: Setup, options: argparse.Namespace) -> Outcome:
    """Start, check, warm up, measure at each concurrency, stop."""
    outcome, servers, bodies = Outcome(), list[Server](), bodies_of(key, setup)
    prefix = {"1t": "(1) tabular+text", "1w": "(1) tabular+text, 2 workers", "1s": "(1) shadow"}.get(
        key, LABELS[key][:3]
    )
    skewguard = str(BIN / "skewguard")
    try:
        if key == "1s" and setup.shadow is not None:
            _run(
                [skewguard, "cascade", "shadow", CASCADE, setup.shadow, "--fraction", "1"],
                setup.env,
                setup.home / "setup.log",
            )
        url = launch(key, setup, servers)
        outcome.p1, failed = check_answers(url, bodies) if key != "0" else ([], 0)
        if failed:
            outcome.notes.append(f"{prefix} {failed} one-at-a-time check request(s) failed")
        if key in TEXT_KEYS:
            outcome.notes.append(f"{prefix} serves {served_cascade(url)}")
        if key in ("1", *TEXT_KEYS):
            outcome.ready_s = servers[-1].ready_s
        load(url, bodies, max(options.concurrency), options.warmup, options.loadgen)
        for concurrency in options.concurrency:
            settle(url, bodies)
            with sampling_rss(servers):
                result = load(url, bodies, concurrency, options.seconds, options.loadgen)
            front = next(server for server in servers if server.front)
            outcome.cells.append(to_cell(key, concurrency, result, servers, tree_unique(front.process.pid)))
            outcome.tools.add(result["tool"])
        if key in GATEWAY_KEYS:
            outcome.notes.append(f"{prefix} prediction log after the load: {log_stats(url)}")
        if key == "1s":
            outcome.notes.append(f"{prefix} copies during warm-up and the cells: {shadow_stats(url)}")
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        outcome.failure = f"{type(exc).__name__}: {exc}"
    finally:
        stop(servers)
        if key == "1s":
            _run([skewguard, "cascade", "detach", CASCADE], setup.env, setup.home / "setup.log")
    return outcome


def run(options: argparse.Namespace) -> list[str]:
    """The whole benchmark; returns the report's lines."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skewguard-gwbench-") as scratch:
        home = Path(options.home or scratch).resolve()
        home.mkdir(parents=True, exist_ok=True)
        setup = prepare(home, options.orders)
        setup_s = time.perf_counter() - started
        load_before = os.getloadavg()[0]
        outcomes = {key: run_variant(key, setup, options) for key in options.variants}
    measure_s = time.perf_counter() - started - setup_s
    cells = [cell for outcome in outcomes.values() for cell in outcome.cells]
    failures = {key: o.failure for key, o in outcomes.items() if o.failure is not None}
    notes = [note for outcome in outcomes.values() for note in outcome.notes]
    tools = sorted({tool for outcome in outcomes.values() for tool in outcome.tools})
    models = ", ".join(f"{role} {m['tag']}" for role, m in setup.build["models"].items())
    return [
        "skewguard gateway benchmark: single-row POSTs of real demo orders over HTTP on 127.0.0.1",
        describe_machine(),
        f"load average (1 min): {load_before:.2f} before measuring, {os.getloadavg()[0]:.2f} after; the load "
        "generator and the servers share these CPUs",
        f"load generator: {' / '.join(tools) or 'none ran'}, in its own process",
        f"cascade {setup.build['cascade']} from {options.orders:,} demo orders: {models}",
        f"(4) serves {setup.pipelines_source}",
        f"requests: {N_BODIES} distinct newest orders, round-robin; body {setup.body_bytes / 1e3:.1f} kB "
        f"(image {setup.image.base64_bytes / 1e3:.1f} kB base64, a 32×32 PNG); {options.seconds} s per cell "
        f"after a {options.warmup} s warm-up at c={max(options.concurrency)}",
        f"tabular+text requests ((1) tabular+text only): the same orders without the image field, body "
        f"{setup.text_body_bytes / 1e3:.2f} kB, on the cascade {TEXT_CASCADE} (its models read no image)",
        "RSS: peak during the cell of the front server's process tree (RSS MB) and of all the variant's "
        "servers (RSS all); the front tree's distinct physical pages after the load (uniq MB: a page "
        "its processes share counted once; needs root), from /proc",
        "",
        *format_table(cells, failures),
        *(LEGEND[key] for key in options.variants),
        "",
        "ratios from this run:",
        *bare_ratios(cells),
        *ratios(cells),
        "targets:",
        *loadgen_caveat(tools),
        *targets(cells, setup.image, {key: o.ready_s for key, o in outcomes.items() if o.ready_s}),
        agreement({key: o.p1 for key, o in outcomes.items()}),
        *notes,
        *(f"{LABELS[key]} failed: {why}" for key, why in failures.items()),
        f"runtime: setup {setup_s:.0f} s (demo data, train 2 cascades, Bentos, pipelines), "
        f"measuring {measure_s:.0f} s",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, help="seconds per cell, whole (10; --quick 1)")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated (16,64)")
    parser.add_argument("--variants", help="comma-separated of 0,1,2,3,4 (all; --quick 0,1,4)")
    parser.add_argument("--no-shadow", action="store_true", help="leave out (1) with a shadow attached")
    parser.add_argument("--orders", type=int, help="demo orders (20,000; --quick 2,000)")
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "httpx"), default="auto", help="auto: wrk if found"
    )
    parser.add_argument(
        "--home", type=Path, help="keep state here and reuse it (default: a temporary folder)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s cells, variants 1 and 4, small data"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (1 if quick else 10)
    args.variants = (args.variants or ("0,1,4" if quick else "0,1,2,3,4")).split(",")
    args.orders = args.orders or (2_000 if quick else 20_000)
    args.warmup = 1 if quick else 3
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.seconds < 1 or not set(args.variants) <= {"0", "1", "2", "3", "4"} or min(args.concurrency) < 1:
        parser.error("--seconds must be ≥ 1, --variants among 0,1,2,3,4 and each concurrency ≥ 1.")
    # (1) is measured with image requests and, on the no-image cascade, with tabular+text ones,
    # by one gateway process and by two workers; and with image requests and a shadow attached.
    ones = ("1", "1t", "1w") if args.no_shadow else ("1", "1t", "1w", "1s")
    args.variants = [key for v in args.variants for key in (ones if v == "1" else (v,))]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; 1 if a variant failed (its reason is printed), else 0."""
    lines = run(parse_args(argv))
    print("\n".join(lines), flush=True)
    return 1 if any(" failed: " in line for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
