"""The champion alias stores: file, Redis and PostgreSQL keep one alias per cascade, atomically.

Redis and PostgreSQL are the machine's real servers (127.0.0.1:6379 and :5432, database
``test``); each test uses a namespace of its own, so runs never see each other's aliases.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from skewguard.bentos.aliases import (
    Alias,
    AliasStore,
    FileAliasStore,
    PostgresAliasStore,
    RedisAliasStore,
    open_alias_store,
)
from skewguard.errors import ConfigError, SharedStateUnavailable

REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _alias(champion: str, retired: list[str] | None = None) -> Alias:
    return Alias(champion=champion, promoted_at=datetime.now(UTC), retired=retired or [])


@pytest.fixture(params=["file", "redis", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AliasStore]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "file":
        yield FileAliasStore(tmp_path)
        return
    url = {"redis": REDIS, "postgresql": POSTGRES}[request.param]
    opened = open_alias_store(f"{url}?namespace={namespace}")
    assert isinstance(opened, RedisAliasStore | PostgresAliasStore)
    yield opened


@pytest.mark.integration
def test_a_cascade_has_no_alias_until_one_is_stored_and_then_reads_it_back(store: AliasStore) -> None:
    assert store.get("returns") is None
    assert store.names() == []
    stored = store.update("returns", lambda current: _alias("cascade-returns:v1"))
    assert store.get("returns") == stored
    assert store.get("other") is None
    assert store.names() == ["returns"]


@pytest.mark.integration
def test_concurrent_promotions_each_see_the_one_before(store: AliasStore) -> None:
    """Every read-modify-write sees the previous one's result: none is lost."""
    store.update("returns", lambda current: _alias("cascade-returns:v0"))

    def promote(i: int) -> None:
        store.update(
            "returns",
            lambda current: _alias(f"cascade-returns:v{i}", [*(current.retired if current else []), "x"]),
        )

    threads = [threading.Thread(target=promote, args=(i,)) for i in range(1, 13)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.get("returns")
    assert final is not None
    assert len(final.retired) == 12


@pytest.mark.integration
def test_namespaces_keep_deployments_apart() -> None:
    first = open_alias_store(f"{REDIS}?namespace=a{uuid.uuid4().hex[:8]}")
    second = open_alias_store(f"{REDIS}?namespace=b{uuid.uuid4().hex[:8]}")
    first.update("returns", lambda current: _alias("cascade-returns:v1"))
    assert second.get("returns") is None


@pytest.mark.parametrize(
    "url", ["redis://:secret@127.0.0.1:1/0", "postgresql://skewguard:secret@127.0.0.1:1/test"]
)
def test_an_unreachable_store_is_a_503_naming_the_setting_without_the_password(url: str) -> None:
    store = open_alias_store(url)
    with pytest.raises(SharedStateUnavailable) as caught:
        store.get("returns")
    assert caught.value.status_code == 503
    assert caught.value.field == "SKEWGUARD_ALIAS_URL"
    assert "127.0.0.1:1" in caught.value.message
    assert "secret" not in caught.value.message


def test_an_unknown_scheme_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        open_alias_store("mysql://root@127.0.0.1/test")
    assert caught.value.field == "SKEWGUARD_ALIAS_URL"
    assert "redis://" in caught.value.message
    assert isinstance(open_alias_store(None), FileAliasStore)


def test_the_alias_file_is_readable_by_other_users(tmp_path: Path) -> None:
    """A gateway in a container runs as its own user and must read promotions made on the host."""
    store = FileAliasStore(tmp_path)
    store.update("returns", lambda current: _alias("cascade-returns:v1"))
    assert store.path.stat().st_mode & 0o044 == 0o044
