"""The model export: a shared folder (or fsspec URL) holding one archive per promoted model.

A promotion exports the champion's manifest and models once (``bentoml models export``
format, ``<name>-<version>.bentomodel``) and records each archive's sha256 in the alias
(``skewguard.bentos.aliases``). A replica whose own model store lacks a model imports it:
it copies the archive, checks the copy's sha256 against the alias, and only then lets
BentoML import it; loading then checks every file against the digests recorded at
packaging (``skewguard.bentos.store``), as for any model. The export location may be
read-only to the replicas (a volume mounted read-only, a bucket they may only read).

An archive is written under a temporary name and renamed, so a reader never sees half of
one; an archive already there is kept (a tag's files never change) and only hashed.
fsspec and BentoML errors are translated here, once.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from skewguard.bentos.store import has_model
from skewguard.errors import ArtifactError, SharedStateUnavailable

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

EXPORT_SETTING = "SKEWGUARD_MODEL_EXPORT"
SUFFIX = ".bentomodel"
CHUNK = 1 << 20


def archive_name(tag: str) -> str:
    """``name:version`` → ``name-version.bentomodel`` (BentoML's own export file name)."""
    name, _, version = tag.partition(":")
    return f"{name}-{version}{SUFFIX}"


def export_models(export: str, tags: Iterable[str]) -> dict[str, str]:
    """Export each model to ``export`` unless its archive is there; tag → the archive's sha256."""
    digests = {}
    with _translated(export):
        fs, root = _filesystem(export)
        fs.makedirs(root, exist_ok=True)
        for tag in tags:
            target = f"{root.rstrip('/')}/{archive_name(tag)}"
            if not fs.exists(target):
                _write_archive(fs, tag, target)
            with fs.open(target, "rb") as file:
                digests[tag] = _sha256(file)
    return digests


def import_missing(export: str | None, archives: Mapping[str, str]) -> list[str]:
    """Import the models of ``archives`` the local store lacks, each checked first; the tags imported."""
    missing = [tag for tag in archives if not has_model(tag)]
    if not missing:
        return []
    if export is None:
        raise ArtifactError(
            f"Models {', '.join(missing[:5])} are not in this model store, and no model export is "
            f"configured to import them from; set {EXPORT_SETTING}."
        )
    with _translated(export):
        fs, root = _filesystem(export)
        for tag in missing:
            _import_one(fs, f"{root.rstrip('/')}/{archive_name(tag)}", tag, archives[tag])
    return missing


def _write_archive(fs: AbstractFileSystem, tag: str, target: str) -> None:
    import bentoml

    with tempfile.TemporaryDirectory(prefix="skewguard-export-") as folder:
        local = Path(folder) / archive_name(tag)
        bentoml.models.export_model(tag, str(local))
        partial = f"{target}.partial-{Path(folder).name}"
        fs.put_file(str(local), partial)
        fs.mv(partial, target)  # a rename on a local or mounted folder: readers see all or nothing


def _import_one(fs: AbstractFileSystem, source: str, tag: str, expected: str) -> None:
    import bentoml
    from bentoml.exceptions import BentoMLException

    with tempfile.TemporaryDirectory(prefix="skewguard-import-") as folder:
        local = Path(folder) / archive_name(tag)
        with fs.open(source, "rb") as remote, local.open("wb") as copy:
            digest = _sha256(remote, copy)
        if digest != expected:
            raise ArtifactError(
                f"The exported archive of {tag} ({source}) does not match the sha256 its promotion "
                f"recorded ({digest[:12]}… instead of {expected[:12]}…); refusing to import it. "
                "Promote the cascade again to export it anew."
            )
        try:
            bentoml.models.import_model(str(local))
        except BentoMLException as exc:
            if not has_model(tag):  # not another process of this store importing it at the same time
                raise ArtifactError(f"BentoML could not import {tag} from {source}: {exc}") from exc


def _sha256(source: IO[bytes], copy: IO[bytes] | None = None) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        if copy is not None:
            copy.write(chunk)
    return digest.hexdigest()


def _filesystem(export: str) -> tuple[AbstractFileSystem, str]:
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(export)
    return fs, str(root)


@contextmanager
def _translated(export: str) -> Iterator[Any]:
    try:
        yield
    except (OSError, ValueError) as exc:
        raise SharedStateUnavailable(
            f"The model export {export} cannot be read or written: {exc}.", field=EXPORT_SETTING
        ) from exc
