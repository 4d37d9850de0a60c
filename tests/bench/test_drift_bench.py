"""The drift benchmark runs end to end on small frames and prints every row and ratio (no timing bounds)."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "drift.py"
ROWS = (
    "(a) skewguard drift job: overall + branches, L∞, HTML + JSON + metrics",
    "(b) raw Evidently: one Report, same ValueDrift tests, HTML",
    "(c) raw Evidently: one Report per scope (overall + branches), HTML",
    "(d) raw Evidently as (b), BLAS/OpenMP held to 1 thread as the job holds them",
)
NUMBER = r"([\d,]+(?:\.\d+)?)"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_drift", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.slow
def test_benchmark_prints_every_row_and_finite_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    # 1,400 / 1,100 rows: the retail branch has enough rows on both sides to be compared.
    assert _load_script().main(["--reference", "1400", "--current", "1100", "--repeats", "1"]) == 0
    out = capsys.readouterr().out

    assert re.search(r"^machine: .+, \d+ logical CPUs, load average [\d.]+ [\d.]+ [\d.]+ ", out, re.M)
    assert re.search(r"python 3\.\d+\.\d+, evidently 0\.7\.\d+", out)
    frames = re.search(
        r"^frames: reference 1,400 rows, current 1,100 rows, (\d+) columns .*retail \(", out, re.M
    )
    assert frames is not None, out
    assert int(frames.group(1)) >= 10
    for label in ROWS:
        row = re.search(
            rf"^{re.escape(label)}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+1\s*$",
            out,
            re.M,
        )
        assert row is not None, f"no table row {label!r} in:\n{out}"
        seconds, fastest, cpu, rss, child_rss = (_number(value) for value in row.groups())
        assert (child_rss > 100) == label.startswith("(a)")  # only the job forks (its branch scopes)
        assert 0 < fastest <= seconds
        assert cpu > 0
        assert rss > 100  # Evidently alone is ~300 MB: a tiny figure would be the wrong unit
    ratios = re.findall(rf"^  (.+?)\s+{NUMBER}×", out, re.M)
    assert [" ".join(name.split()) for name, _ in ratios] == [
        "wall time, (a) vs (b)",
        "CPU time, (a) vs (b)",
        "wall time, (a) vs (c)",
        "wall time, (a) vs (d)",
        "peak RSS, (a) vs (b)",
    ]
    for name, value in ratios:
        assert math.isfinite(_number(value)), name
        assert _number(value) > 0, name
    assert re.search(r"target ≤ 1\.2×: (met|NOT met)\)", out)
