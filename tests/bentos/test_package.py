"""The packaging fingerprint: the cache key of packaged models follows the code that packages them."""

from __future__ import annotations

import shutil
from pathlib import Path

from skewguard.bentos.package import PACKAGE_SOURCES, packaging_fingerprint


def test_the_fingerprint_changes_with_a_packaging_source_and_only_then(tmp_path: Path) -> None:
    copy = tmp_path / "bentos"
    shutil.copytree(PACKAGE_SOURCES, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert packaging_fingerprint(copy) == packaging_fingerprint(PACKAGE_SOURCES)
    (copy / "notes.txt").write_text("not a source")
    assert packaging_fingerprint(copy) == packaging_fingerprint(PACKAGE_SOURCES)
    converter = copy / "convert.py"
    converter.write_text(converter.read_text() + "\n# a changed converter\n")
    assert packaging_fingerprint(copy) != packaging_fingerprint(PACKAGE_SOURCES)
