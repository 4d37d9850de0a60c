"""Drift benchmark: the skewguard drift job against raw Evidently on the same frames.

    .venv/bin/python bench/drift.py [--reference 50000] [--current 10000] [--repeats 3]

Builds one pair of monitoring frames from the seeded demo generator — the oldest
``--reference`` orders against the newest ``--current`` ones, with exactly the columns and
types the job monitors (``skewguard.monitoring.frames``: request fields, online features, hour of
day, image brightness and contrast, prediction, P(class 1), route). The cascade's outputs
are drawn from the labels (a seeded 5 % of routes flipped, a noisy probability): the drift
computation only sees columns, and fitting a cascade on 50,000 orders would cost minutes.

Each run is a fresh process (its peak RSS is that run's own) and the variants take turns:

(a) the job's drift work: ``run_drift`` (overall as an Evidently report, every branch, the
    L-infinity test) and its outputs — the HTML report, the JSON summary, the metrics file;
(b) raw Evidently: one ``Report`` with the same ``ValueDrift`` tests over all rows, its HTML;
(c) raw Evidently doing what (a) compares: one ``Report`` per scope (all rows, each branch);
(d) (b) with BLAS and OpenMP held to one thread, as the job holds them (threadpoolctl).

CPU time counts each process's children too: the job computes its branch scopes in a forked
child beside the overall report (``skewguard.monitoring.forked``).

Frame building is outside the timings: (b) and (c) get the frames ready-made too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

VARIANTS = {
    "job": "(a) skewguard drift job: overall + branches, L∞, HTML + JSON + metrics",
    "raw": "(b) raw Evidently: one Report, same ValueDrift tests, HTML",
    "raw-scopes": "(c) raw Evidently: one Report per scope (overall + branches), HTML",
    "raw-1thread": "(d) raw Evidently as (b), BLAS/OpenMP held to 1 thread as the job holds them",
}
TARGET_RATIO = 1.2
"""The issue's target: (a) within 1.2× of (b)."""
BRANCH = "route"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", type=int, default=50_000, help="Reference rows.")
    parser.add_argument("--current", type=int, default=10_000, help="Current rows.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each variant.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.frames)))
        return 0
    if min(args.reference, args.current, args.repeats) < 1:
        parser.error("--reference, --current and --repeats must be at least 1")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="skewguard-bench-drift-") as folder:
        frames = Path(folder)
        description = build_frames(frames, args.reference, args.current, args.seed)
        runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
        for repeat in range(args.repeats):
            for variant in VARIANTS:
                print(f"run {repeat + 1}/{args.repeats}: {variant}", file=sys.stderr, flush=True)
                runs[variant].append(spawn(variant, frames))
    print(machine(load_start))
    print(description)
    print(table(runs))
    print(ratios(runs))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def build_frames(folder: Path, n_reference: int, n_current: int, seed: int) -> str:
    """Write the reference and current frames and their columns to ``folder``; describe them."""
    import numpy as np
    from returns_data import generate_demo_data
    from returns_models import (
        ENTITY_KEY,
        FEATURE_VIEW,
        ONLINE,
        TEXT,
        feature_columns,
        make_pipeline,
        training_frame,
    )

    from skewguard.bentos.spec import OnlineFeature, infer_spec
    from skewguard.monitoring.frames import Outputs, monitored_columns, reference_frame

    n = n_reference + n_current
    orders = training_frame(generate_demo_data(n_orders=n, n_customers=max(200, n // 10), seed=seed))
    online = [OnlineFeature(f, f"{FEATURE_VIEW}:{f}", float(orders[f].median())) for f in ONLINE]
    spec = infer_spec(
        make_pipeline("lr"), orders[feature_columns()], kinds={TEXT: "text"}, entity_key=ENTITY_KEY,
        online_features=online,
    )  # fmt: skip
    columns = monitored_columns(spec)
    rng = np.random.default_rng(seed)
    reseller = orders["is_reseller"].to_numpy().astype(bool) ^ (rng.random(n) < 0.05)
    noise = rng.normal(0.0, 0.15, n)
    proba = np.clip(0.25 + 0.3 * (orders["returned"].to_numpy() - 0.5) + noise, 0.001, 0.999)
    outputs = Outputs(
        prediction=tuple(int(p >= 0.5) for p in proba),
        probabilities=tuple({"0": 1.0 - float(p), "1": float(p)} for p in proba),
        route=tuple(np.where(reseller, "reseller", "retail").tolist()),
    )
    frame = reference_frame(orders, columns, outputs)  # training rows are time-ordered
    reference = frame.iloc[:n_reference].reset_index(drop=True)
    current = frame.iloc[n_reference:].reset_index(drop=True)
    reference.to_pickle(folder / "reference.pkl")  # our own temporary files; parquet's reader peaks high
    current.to_pickle(folder / "current.pkl")
    (folder / "columns.json").write_text(json.dumps([dataclasses.asdict(c) for c in columns]))
    kinds = [c.kind for c in columns]
    branches = ", ".join(
        f"{name} ({(reference[BRANCH] == name).sum():,} / {(current[BRANCH] == name).sum():,} rows)"
        for name in sorted(set(reference[BRANCH]))
    )
    return (
        f"frames: reference {len(reference):,} rows, current {len(current):,} rows, {len(columns)} columns "
        f"({kinds.count('numeric')} numeric, {kinds.count('categorical')} categorical, "
        f"{kinds.count('text')} text); branches {branches}"
    )


def spawn(variant: str, frames: Path) -> dict[str, float]:
    """One run of ``variant`` in a fresh interpreter; its JSON line back."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--frames", str(frames)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {variant} run failed:\n{done.stderr[-3_000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_child(variant: str, frames: Path) -> dict[str, float]:
    """Load the frames and Evidently, then time one variant; peak RSS of this process."""
    import warnings

    import pandas as pd
    from threadpoolctl import threadpool_limits

    from skewguard.monitoring.frames import Column, ColumnSet

    warnings.filterwarnings("ignore")  # the text classifier's convergence notes, in every variant alike
    reference = pd.read_pickle(frames / "reference.pkl")  # noqa: S301 - written by our parent process
    current = pd.read_pickle(frames / "current.pkl")  # noqa: S301
    columns = ColumnSet(tuple(Column(**c) for c in json.loads((frames / "columns.json").read_text())))
    work = _job if variant == "job" else _raw
    import skewguard.monitoring.drift  # noqa: F401 - Evidently's import (~3 s) is not what is timed

    rss_before = _rss_mb()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak (VmHWM) restarts from the current RSS
    wall, cpu = time.perf_counter(), _cpu_seconds()
    limit = threadpool_limits(limits=1) if variant == "raw-1thread" else contextlib.nullcontext()
    with limit:
        work(reference, current, columns, frames / variant, per_scope=variant == "raw-scopes")
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "peak_rss_mb": _status_mb("VmHWM"),
        "child_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "rss_before_mb": rss_before,
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _job(reference: Any, current: Any, columns: Any, out: Path, *, per_scope: bool) -> None:
    from skewguard.monitoring.drift import run_drift
    from skewguard.monitoring.exposition import write_metrics
    from skewguard.monitoring.job import HTML_FILE, METRICS_FILE, SUMMARY_FILE, write_summary

    run = run_drift(reference, current, columns, cascade="bench")
    run.save_html(out / HTML_FILE)
    write_summary(run.summary, out / SUMMARY_FILE)
    write_metrics(run.summary, out / METRICS_FILE)


def _raw(reference: Any, current: Any, columns: Any, out: Path, *, per_scope: bool) -> None:
    """Evidently alone: the same tests (L∞ registered as the job registers it), HTML of each scope."""
    from skewguard.monitoring.drift import DriftMethods, _register_linf, _run_report

    _register_linf()
    methods = DriftMethods()
    scopes = [("overall", reference, current, columns)]
    if per_scope:
        inside = columns.without([BRANCH])
        for name in sorted(set(reference[BRANCH].dropna())):
            scopes.append(
                (name, reference[reference[BRANCH] == name], current[current[BRANCH] == name], inside)
            )
    out.mkdir(parents=True, exist_ok=True)
    for name, ref, cur, scope_columns in scopes:  # the job's Report call: Evidently with nothing around it
        _run_report(name, ref, cur, scope_columns, methods).save_html(str(out / f"{name}.html"))


def _cpu_seconds() -> float:
    """CPU time of this process and of its children waited for (the job's forked branch scopes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    """A ``kB`` line of /proc/self/status, in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def machine(load: tuple[float, float, float]) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("evidently", "pandas", "scikit-learn")
    )
    return (
        f"machine: {cpu}, {os.cpu_count()} logical CPUs, load average {' '.join(f'{x:.2f}' for x in load)} "
        f"at the start; python {platform.python_version()}, {versions}"
    )


def table(runs: dict[str, list[dict[str, float]]]) -> str:
    widths = {"median s": 10, "min s": 9, "CPU s": 9, "peak RSS MB": 13, "child MB": 10, "runs": 6}
    header = f"{'variant':<76}" + "".join(f"{name:>{width}}" for name, width in widths.items())
    lines = [header]
    for variant, label in VARIANTS.items():
        results = runs[variant]
        lines.append(
            f"{label:<76}{_median(results, 'seconds'):>10.2f}{min(r['seconds'] for r in results):>9.2f}"
            f"{_median(results, 'cpu_seconds'):>9.2f}{max(r['peak_rss_mb'] for r in results):>13,.0f}"
            f"{max(r['child_peak_rss_mb'] for r in results):>10,.0f}{len(results):>6}"
        )
    before = max(r["rss_before_mb"] for results in runs.values() for r in results)
    process = max(r["process_peak_rss_mb"] for results in runs.values() for r in results)
    lines.append(
        f"peak RSS: during the timed work, per process; before it (frames and Evidently loaded) up to "
        f"{before:,.0f} MB, whole-process peak up to {process:,.0f} MB; child MB: peak RSS of a forked "
        "child (the job's branch scopes; its pages shared with the parent count in both)\n"
        "CPU s: the process and its children"
    )
    return "\n".join(lines)


def ratios(runs: dict[str, list[dict[str, float]]]) -> str:
    job, raw, scopes, one_thread = (runs[v] for v in VARIANTS)
    wall = _median(job, "seconds") / _median(raw, "seconds")
    verdict = "met" if wall <= TARGET_RATIO else "NOT met"
    return "\n".join(
        [
            "ratios (medians):",
            f"  wall time, (a) vs (b)    {wall:.2f}×  (target ≤ {TARGET_RATIO}×: {verdict})",
            f"  CPU time, (a) vs (b)     {_median(job, 'cpu_seconds') / _median(raw, 'cpu_seconds'):.2f}×",
            f"  wall time, (a) vs (c)    {_median(job, 'seconds') / _median(scopes, 'seconds'):.2f}×",
            f"  wall time, (a) vs (d)    {_median(job, 'seconds') / _median(one_thread, 'seconds'):.2f}×",
            f"  peak RSS, (a) vs (b)     {_peak(job) / _peak(raw):.2f}×",
        ]
    )


def _median(results: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def _peak(results: list[dict[str, float]]) -> float:
    return max(r["peak_rss_mb"] for r in results)


if __name__ == "__main__":
    sys.exit(main())
