"""The inference benchmark runs end to end and prints every row and ratio (no timing thresholds).

Besides the demo model, it times a regressor and a default-TF-IDF pipeline, both packaged as written.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from skewguard.bentos.store import list_models

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "inference.py"
ROWS = (
    "(a) sklearn predict_proba, 1 row",
    "(b) onnxruntime run_onnx, 1 row",
    "(c) serving: encode_rows + run_onnx",
    "(d) serving: decode + DataFrame + sklearn",
    "(a) sklearn predict_proba, 1,000-row batch",
    "(b) onnxruntime run_onnx, 1,000-row batch",
    "(ra) sklearn predict, 1 row",
    "(rb) onnxruntime, 1 row",
    "(ra) sklearn predict, 1,000 rows",
    "(rb) onnxruntime, 1,000 rows",
    "(ta) sklearn predict_proba, 1 row",
    "(tb) onnxruntime, 1 row",
    "(ta) sklearn predict_proba, 1,000 rows",
    "(tb) onnxruntime, 1,000 rows",
)
NUMBER = r"([\d,]+(?:\.\d+)?)"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_inference", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.slow
def test_benchmark_prints_every_row_and_finite_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    # BentoML fixes its home on first use: use the session's isolated store (conftest) first,
    # so the script's temporary home, deleted when it returns, never becomes this process's.
    list_models()
    assert _load_script().main(["--orders", "2000", "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out

    assert re.search(r"^machine: .+, \d+ logical CPUs .* python 3\.\d+.* onnxruntime ", out, re.M)
    assert "scikit-learn held to 1 with threadpoolctl" in out
    assert re.search(r"^parity: passed, max \|Δp\| \S+ over [\d,]+ rows", out, re.M)
    for key in ("r", "t"):
        assert re.search(rf"^\({key}\) .+: [\d,]+ held-out rows; parity passed, max \|Δ\| ", out, re.M)
    for label in ROWS:
        row = re.search(rf"^{re.escape(label)}\s+{NUMBER}" + rf"\s+{NUMBER}" * 4 + r"\s*$", out, re.M)
        assert row is not None, f"no table row {label!r} in:\n{out}"
        assert all(_number(value) > 0 for value in row.groups()), row.group(0)
    ratios = re.findall(rf"^  (.+?)\s+{NUMBER}×$", out, re.M)
    assert [" ".join(name.split()) for name, _ in ratios] == [
        "single row p50, (b) vs (a)",
        "single row p99, (b) vs (a)",
        "single row mean, (b) vs (a)",
        "1,000-row throughput, (b) vs (a)",
        "serving row p50, (c) vs (d)",
        "serving row p99, (c) vs (d)",
        "serving row mean, (c) vs (d)",
        "(r) single row p50, (b) vs (a)",
        "(r) 1,000-row throughput, (b) vs (a)",
        "(t) single row p50, (b) vs (a)",
        "(t) 1,000-row throughput, (b) vs (a)",
    ]
    for name, value in ratios:
        assert math.isfinite(_number(value)), name
        assert _number(value) > 0, name
