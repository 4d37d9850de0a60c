"""The gateway benchmark's report: the table, the ratios of one run, the targets, the machine."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.gateway_load import describe_tool

LABELS = {
    "0": "(0) bare stack: uvicorn, trivial app",
    "1": "(1) co-located, image requests",
    "1t": "(1) co-located, tabular+text requests",
    "1w": "(1) tabular+text, 2 gateway workers",
    "1s": "(1) image requests, shadow at 1.0",
    "2": "(2) gateway remote, 3 bentoml serve",
    "3": "(3) BentoML composed, bentoml.depends",
    "4": "(4) naive: Starlette + sklearn + Feast",
}
LEGEND = {
    "0": "  (0) the gateway's uvicorn (same options, HTTP protocol, -O) with an app that parses the "
    "tabular+text body with orjson and answers a small JSON: the stack's limit",
    "1": "  (1) gateway, full path, one uvicorn process serving `returns`: validation, Feast (lookups "
    "gathered), skew guard, 2 ONNX runs, SQLite log",
    "1t": "  (1) tabular+text: the same path in its own uvicorn process serving `returns-text` (trained with "
    "--no-image: no image input to decode, hash or summarise for the log)",
    "1w": "  (1) tabular+text, 2 workers: the same, SKEWGUARD_WORKERS=2 (gunicorn, preloaded app, a "
    "SO_REUSEPORT socket per worker); RSS sums the master and both workers, which share pages",
    "1s": "  (1) image requests with a shadow attached at fraction 1.0: a second version of `returns` over "
    "the same three graphs (its own sessions) runs a copy of every request off the response path",
    "2": "  (2) as (1), the ONNX runs as HTTP calls (httpx) to 3 `bentoml serve` Bentos, 1 worker "
    "each; BentoML access logs off in (2) and (3)",
    "3": "  (3) 4 BentoML services, 1 worker each; one Feast call per request; validation in the model "
    "services; no guard, no log",
    "4": "  (4) one uvicorn process; per request a Feast call, a pandas frame and 2 predict_proba in the "
    "event loop; no guard, no log",
}
TARGET_REMOTE_RATIO, TARGET_RSS_MB = 1.5, 300
TARGET_READY_S = 3.0
TARGET_SHADOW_P99_RATIO = 1.25
"""The champion's p99 at c=16 with a shadow at fraction 1.0, at most this × the p99 without."""
PACKAGES = ("starlette", "uvicorn", "onnxruntime", "bentoml", "feast", "scikit-learn", "httpx")


@dataclass(frozen=True, slots=True)
class Cell:
    """One variant at one concurrency: 2xx responses per second, latency, errors, peak RSS, pages."""

    variant: str
    concurrency: int
    ok_rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    errors_5xx: int
    rss_front_mb: float
    rss_all_mb: float
    unique_front_mb: float | None
    """The front server tree's distinct physical pages after the load, None where unreadable."""


@dataclass(frozen=True, slots=True)
class ImageCost:
    """What the image adds to each request: base64 size and in-process decode time."""

    base64_bytes: float
    decode_us: float


def describe_machine() -> str:
    """CPU, cores, memory, OS and the versions that shape the numbers."""
    models = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    versions = " · ".join(f"{name} {metadata.version(name)}" for name in PACKAGES)
    return (
        f"machine: {models[0] if models else platform.processor()}, {os.cpu_count()} logical CPUs "
        f"({len(os.sched_getaffinity(0))} usable), {memory:.0f} GiB · {platform.system()} "
        f"{platform.release()} · python {platform.python_version()} · {versions}"
    )


def format_table(cells: Sequence[Cell], failures: Mapping[str, str]) -> list[str]:
    head = (
        f"{'variant':<40}{'c':>4}{'2xx req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'5xx':>7}"
        f"{'RSS MB':>8}{'RSS all':>9}{'uniq MB':>9}"
    )
    lines = [head, "-" * len(head)]
    for c in cells:
        lines.append(
            f"{LABELS[c.variant]:<40}{c.concurrency:>4}{c.ok_rps:>11,.0f}{c.p50_ms:>9.2f}{c.p99_ms:>9.2f}"
            f"{c.errors:>8,}{c.errors_5xx:>7,}{c.rss_front_mb:>8,.0f}{c.rss_all_mb:>9,.0f}"
            f"{_mb(c.unique_front_mb):>9}"
        )
    lines += [f"{LABELS[key]:<40}  failed: {why.splitlines()[0]}" for key, why in failures.items()]
    return lines


def ratios(cells: Sequence[Cell]) -> list[str]:
    """(1)/(4) and (2)/(3) (image requests on both sides), and (1) tabular+text vs image, per concurrency."""
    by = {(c.variant, c.concurrency): c for c in cells}
    lines = []
    pairs = (
        ("1", "4", "(1)/(4)"),
        ("2", "3", "(2)/(3)"),
        ("1t", "1", "(1) tabular+text/image"),
        ("1w", "1t", "(1) tabular+text 2 workers/1"),
    )
    for a, b, name in pairs:
        for n in sorted({c.concurrency for c in cells}):
            x, y = by.get((a, n)), by.get((b, n))
            if x is not None and y is not None and y.ok_rps > 0 and x.p99_ms > 0:
                lines.append(
                    f"  {name} at c={n:<3}  2xx req/s {x.ok_rps / y.ok_rps:>7.2f}×   "
                    f"p99 {y.p99_ms / x.p99_ms:>6.2f}× lower"
                )
    return lines or ["  (no pair of variants measured)"]


BARE_TARGETS = {"1t": (0.4, 2.5), "1": (0.25, None)}
"""Gateway rows measured against the bare stack at c=16: (≥ this × its req/s, p99 ≤ this × its p99)."""
TARGET_WORKERS_RATIO = 1.6
"""Two gateway workers at c=64: at least this × one process's req/s."""


def bare_ratios(cells: Sequence[Cell]) -> list[str]:
    """Every gateway row as a ratio to the bare stack at the same concurrency."""
    by = {(c.variant, c.concurrency): c for c in cells}
    lines = []
    for key in ("1t", "1", "1w", "1s", "2"):
        for n in sorted({c.concurrency for c in cells}):
            row, bare = by.get((key, n)), by.get(("0", n))
            if row is not None and bare is not None and bare.ok_rps > 0 and bare.p99_ms > 0:
                lines.append(
                    f"  {LABELS[key]:<40} / (0) at c={n:<3} 2xx req/s {row.ok_rps / bare.ok_rps:>6.2f}×   "
                    f"p99 {row.p99_ms / bare.p99_ms:>6.2f}×"
                )
    return lines


def bare_targets(by: Mapping[tuple[str, int], Cell]) -> list[str]:
    """The ratio targets against the bare stack at c=16, and two workers against one at c=64."""
    lines = []
    bare = by.get(("0", 16))
    for key, (rps, p99) in BARE_TARGETS.items():
        row = by.get((key, 16))
        if bare is None or row is None or not bare.ok_rps or not bare.p99_ms:
            continue
        ratio, slower = row.ok_rps / bare.ok_rps, row.p99_ms / bare.p99_ms
        met = ratio >= rps and (p99 is None or slower <= p99)
        bound = f" and p99 ≤ {p99:g}× its p99" if p99 is not None else ""
        lines.append(
            f"  {LABELS[key]} at c=16 ≥ {rps:g}× the bare stack's req/s{bound}: {_verdict(met)} "
            f"({ratio:.2f}×, p99 {slower:.2f}×; {row.ok_rps:,.0f} against {bare.ok_rps:,.0f} req/s)"
        )
    one, two = by.get(("1t", 64)), by.get(("1w", 64))
    if one is not None and two is not None and one.ok_rps:
        ratio = two.ok_rps / one.ok_rps
        lines.append(
            f"  two workers ≥ {TARGET_WORKERS_RATIO:g}× one process at c=64 (tabular+text): "
            f"{_verdict(ratio >= TARGET_WORKERS_RATIO)} ({ratio:.2f}×)"
        )
    return lines


def loadgen_caveat(tools: Sequence[str]) -> list[str]:
    """A warning beside the targets when the httpx fallback drove a cell (``tools``: as ``describe_tool``)."""
    if describe_tool("httpx") not in tools:
        return []
    return [
        "  CAUTION: async httpx drove some cells (--loadgen httpx, or wrk not found). One Python process",
        "  generating the load takes CPU the servers would have had: those req/s and p99 figures and",
        "  their verdicts measure the load generator as much as the servers. Use wrk (Debian package).",
    ]


def targets(cells: Sequence[Cell], image: ImageCost, ready_s: Mapping[str, float] | None = None) -> list[str]:
    """Each target this run measured: met or NOT met, with the figures.

    ``ready_s``: per (1) variant, seconds from starting `skewguard serve` to its first /readyz 200.
    """
    by = {(c.variant, c.concurrency): c for c in cells}
    lines = bare_targets(by)
    lines += shadow_target(by)
    if by.get(("1", 16)) is not None:
        lines += [
            f"      The image adds {image.base64_bytes / 1e3:.1f} kB of base64 per request and "
            f"{image.decode_us:.0f} µs of CPU to decode it",
            "      (bentos.images.decode_base64_image, timed in this process), plus its hash and",
            "      statistics for the prediction log.",
        ]
    for n in sorted({c.concurrency for c in cells}):
        two, three = by.get(("2", n)), by.get(("3", n))
        if two is not None and three is not None:
            ratio = two.ok_rps / three.ok_rps if three.ok_rps else float("inf")
            lines.append(
                f"  (2) ≥ {TARGET_REMOTE_RATIO}× (3) with zero errors at c={n}: "
                f"{_verdict(ratio >= TARGET_REMOTE_RATIO and two.errors == 0)} "
                f"({ratio:.2f}×; errors (2) {two.errors:,}, (3) {three.errors:,})"
            )
    peaks = {
        name: max(c.rss_front_mb for c in cells if c.variant == key)
        for key, name in (("1", "image"), ("1t", "tabular+text"))
        if any(c.variant == key for c in cells)
    }
    if peaks:  # each (1) gateway serves one cascade: three models
        lines.append(
            f"  gateway RSS ≤ {TARGET_RSS_MB} MB with three models: "
            f"{_verdict(max(peaks.values()) <= TARGET_RSS_MB)} (peak under load, (1): "
            + ", ".join(f"{name} {mb:.0f} MB" for name, mb in peaks.items())
            + ")"
        )
    if shared := [c.unique_front_mb for c in cells if c.variant == "1w" and c.unique_front_mb is not None]:
        lines.append(
            f"  the same, 2 workers, each page counted once: {_verdict(max(shared) <= TARGET_RSS_MB)} "
            f"({max(shared):.0f} MB of distinct pages in the master and both workers after the load)"
        )
    if ready_s:
        lines.append(
            f"  (1) start to ready ≤ {TARGET_READY_S:g} s once trained: "
            f"{_verdict(max(ready_s.values()) <= TARGET_READY_S)} ("
            + ", ".join(f"{_READY_NAMES.get(k, k)} {s:.2f} s" for k, s in ready_s.items())
            + ", process start to the first /readyz 200, polled every 50 ms)"
        )
    return lines or ["  (no variant measured)"]


def shadow_target(by: Mapping[tuple[str, int], Cell]) -> list[str]:
    """The champion's p99 at c=16 with a shadow at 1.0 against without, from the same run."""
    shadowed, alone = by.get(("1s", 16)), by.get(("1", 16))
    if shadowed is None or alone is None:
        return []
    ratio = shadowed.p99_ms / alone.p99_ms if alone.p99_ms else float("inf")
    return [
        f"  (1) at c=16 with a shadow at 1.0, champion p99 ≤ {TARGET_SHADOW_P99_RATIO}× without: "
        f"{_verdict(ratio <= TARGET_SHADOW_P99_RATIO)} (p99 {shadowed.p99_ms:.2f} ms vs "
        f"{alone.p99_ms:.2f} ms, {ratio:.2f}×; {shadowed.ok_rps:,.0f} vs {alone.ok_rps:,.0f} req/s)"
    ]


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def agreement(p1: Mapping[str, Sequence[float]]) -> str:
    """How far each variant's P(returned) is from (1)'s on the rows checked one at a time.

    The tabular+text rows serve other models (trained without the image), so they are left out.
    """
    base = p1.get("1")
    if not base:
        return "answers: (1) was not checked"
    parts = [
        f"({key}) {max(abs(a - b) for a, b in zip(base, values, strict=True)):.2g}"
        for key, values in p1.items()
        if key not in ("1", "1t", "1w", "1s") and values
    ]
    return f"answers vs (1), max |Δ P(returned)| over {len(base)} rows: " + (", ".join(parts) or "-")


_READY_NAMES = {"1": "image", "1t": "tabular+text", "1w": "tabular+text with 2 workers"}


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"
