"""The program's entry point: `serve` re-executes under `python -O` before the CLI is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from skewguard import entry


def test_serve_is_executed_again_under_optimize(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(entry.os, "execv", lambda path, argv: calls.append((path, argv)))
    monkeypatch.setattr(sys, "argv", ["skewguard", "serve", "--port", "8123"])
    entry.run_optimized()
    assert calls == [(sys.executable, [sys.executable, "-O", "-m", "skewguard", "serve", "--port", "8123"])]


@pytest.mark.parametrize("argv", [["skewguard"], ["skewguard", "train"], ["skewguard", "models", "serve"]])
def test_other_commands_run_in_this_process(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    calls: list[object] = []
    monkeypatch.setattr(entry.os, "execv", lambda *args: calls.append(args))
    monkeypatch.setattr(sys, "argv", argv)
    entry.run_optimized()
    assert calls == []


def test_the_entry_point_decides_before_importing_the_cli() -> None:
    heavy = ("click", "pydantic", "skewguard.cli")
    code = f"import sys, skewguard.entry; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
