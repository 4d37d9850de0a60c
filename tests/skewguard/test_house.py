"""The house rules a reader relies on, checked on the sources: layers, no import cycles, no example names
in the generic packages, no development-log wording in the product."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bentos", "featurestore", "gateway", "monitoring", "pipeline", "predictionlog")
EXAMPLE_WORDS = re.compile(
    r"customer|reseller|\bretail\b|order_ts|orders_30d|return_rate|account_age|[\"']returned[\"']"
    r"|\breturns[-_]|[\"']returns[\"']|bike|station|\bhires?\b|duration_min|is_long",
    re.IGNORECASE,
)
"""What the examples name: their entities, features, labels, branches and cascades."""
ALLOWED_IMPORTS = {
    "bentos": {"bentos"},
    "featurestore": {"featurestore"},
    "predictionlog": {"predictionlog", "bentos"},
    "monitoring": {"monitoring", "bentos", "featurestore"},
    "gateway": {"gateway", "bentos", "featurestore", "predictionlog"},
    "pipeline": {"pipeline", "bentos", "featurestore", "monitoring"},
}
"""Which of skewguard's packages each may import (besides the kernel: errors, settings)."""
DEV_LOG = re.compile(r"\bsession \d+|\bsessions? \d+ (?:to|and)|issue.s target|\bissue \d+\b|\bstop \d+\b")


def _modules() -> Iterator[tuple[str, Path]]:
    for package in ("skewguard", *PACKAGES):
        for path in sorted((ROOT / package).rglob("*.py")):
            if package == "skewguard" and path.parent != ROOT / "skewguard":
                continue  # the symlinked packages are visited under their own names
            relative = path.relative_to(ROOT / package).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            yield ".".join(["skewguard", *([] if package == "skewguard" else [package]), *parts]), path


def _imports(path: Path) -> set[str]:
    """Every skewguard module a file imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("skewguard"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("skewguard")}
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    graph = {name: _imports(path) for name, path in _modules()}
    known = set(graph)
    edges = {m: {t for t in targets if t in known and t != m} for m, targets in graph.items()}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        for target in edges[node]:
            if target in stack:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in done:
                visit(target, [*stack, target], done)
        done.add(node)

    finished: set[str] = set()
    for module in sorted(edges):
        if module not in finished:
            visit(module, [module], finished)
    assert cycles == [], "import cycles: " + "; ".join(" → ".join(c) for c in cycles[:5])


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_inward(package: str) -> None:
    allowed = {f"skewguard.{p}" for p in ALLOWED_IMPORTS[package]} | {
        "skewguard.errors",
        "skewguard.settings",
    }
    wrong = {
        f"{name} imports {target}"
        for name, path in _modules()
        if name.startswith(f"skewguard.{package}.") or name == f"skewguard.{package}"
        for target in _imports(path)
        if not any(target == a or target.startswith(a + ".") for a in allowed)
    }
    assert wrong == set()


@pytest.mark.parametrize("package", PACKAGES)
def test_the_generic_packages_name_no_example(package: str) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if EXAMPLE_WORDS.search(line)
    ]
    assert found == []


def test_the_product_speaks_of_the_product() -> None:
    """No development-log wording (sessions, issue numbers, targets named after issues) anywhere shipped."""
    roots = [
        ROOT / name for name in ("README.md", "docs", "bench", "tests", "examples", "skewguard", *PACKAGES)
    ]
    files = [p for root in roots if root.exists() for p in ([root] if root.is_file() else root.rglob("*"))]
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in files
        if path.suffix in {".py", ".md", ".yaml", ".toml"} and path != Path(__file__)
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
        if DEV_LOG.search(line)
    ]
    assert found == []
