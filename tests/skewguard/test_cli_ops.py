"""The start-up hint of ``skewguard serve``: a curl an operator can paste where they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from skewguard.cli_ops import EXAMPLE_REQUEST, _body_path, _reachable


def test_a_home_under_the_working_folder_is_named_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    where, body = _body_path(Path(".skewguard") / EXAMPLE_REQUEST)
    assert (where, body) == ("", Path(".skewguard") / EXAMPLE_REQUEST)


def test_a_home_elsewhere_such_as_a_containers_is_named_by_the_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    where, body = _body_path(Path("/var/lib/skewguard") / EXAMPLE_REQUEST)
    assert body == Path(EXAMPLE_REQUEST)
    assert "/var/lib" not in where
    assert "home folder" in where


@pytest.mark.parametrize(
    ("host", "shown"), [("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"), ("10.1.2.3", "10.1.2.3")]
)
def test_a_wildcard_bind_address_is_shown_as_the_loopback(host: str, shown: str) -> None:
    assert _reachable(host) == shown
