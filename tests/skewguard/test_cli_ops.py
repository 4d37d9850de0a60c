"""The start-up hint of ``skewguard serve``: a curl an operator can paste where they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from skewguard.cli_examples import REQUESTS_DIR
from skewguard.cli_ops import _body_path


def test_a_home_under_the_working_folder_is_named_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    home = Path(".skewguard")
    where, body = _body_path(home / REQUESTS_DIR / "returns.json", home)
    assert (where, body) == ("", home / REQUESTS_DIR / "returns.json")


def test_a_home_elsewhere_such_as_a_containers_is_named_from_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    home = Path("/var/lib/skewguard")
    where, body = _body_path(home / REQUESTS_DIR / "returns.json", home)
    assert body == Path(REQUESTS_DIR) / "returns.json"
    assert "/var/lib" not in where
    assert "home folder" in where
