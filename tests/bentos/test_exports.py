"""The model export: a promotion exports each model once; a fresh store imports them, checked first.

The import runs as an operator's init container would: ``skewguard import-champion`` in a
process with an empty model store of its own, reading the alias from Redis (a namespace of
the test's) and the archives from the export folder.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from skewguard.bentos.aliases import configured
from skewguard.bentos.exports import archive_name, export_models, import_missing
from skewguard.bentos.manifest import load_manifest, promote
from skewguard.errors import ArtifactError, SharedStateUnavailable
from tests.deploy.conftest import CASCADE, champion_tag  # noqa: F401 - a promoted champion
from tests.gateway.conftest import demo  # noqa: F401 - the session's demo data

SKEWGUARD = Path(sys.executable).with_name("skewguard")


def _import_champion(tmp_path: Path, alias_url: str, export: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SKEWGUARD_HOME": str(tmp_path / "fresh"),
        "BENTOML_HOME": str(tmp_path / "fresh" / "bentoml"),
        "SKEWGUARD_ALIAS_URL": alias_url,
        "SKEWGUARD_MODEL_EXPORT": str(export),
    }
    return subprocess.run(
        [str(SKEWGUARD), "import-champion", CASCADE], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.integration
def test_a_promotion_exports_once_and_a_fresh_store_imports_the_champion(
    tmp_path: Path,
    champion_tag: str,  # noqa: F811
) -> None:
    alias_url = f"redis://127.0.0.1:6379/0?namespace=t{uuid.uuid4().hex[:10]}"
    export = tmp_path / "export"
    with configured(alias_url, str(export)) as shared:
        promote(champion_tag)
        first = {p.name: p.stat().st_mtime_ns for p in export.iterdir()}
        promote(champion_tag)  # again: the archives are there, kept as they are
        alias = shared.aliases.get(CASCADE)
    tags = [champion_tag, *load_manifest(champion_tag).model_tags().values()]
    assert alias is not None
    assert set(alias.archives) == set(tags)
    assert first == {p.name: p.stat().st_mtime_ns for p in export.iterdir()}
    assert set(first) == {archive_name(tag) for tag in tags}
    for tag, digest in alias.archives.items():
        assert hashlib.sha256((export / archive_name(tag)).read_bytes()).hexdigest() == digest

    done = _import_champion(tmp_path, alias_url, export)
    assert done.returncode == 0, done.stderr
    assert champion_tag in done.stdout
    assert (tmp_path / "fresh" / "bentoml" / "models" / f"cascade-{CASCADE}").is_dir()

    router_ref = load_manifest(champion_tag).router
    assert router_ref is not None
    router = export / archive_name(router_ref.tag)
    router.write_bytes(router.read_bytes()[:-1] + b"\0")  # changed after the promotion
    refused = _import_champion(tmp_path / "other", alias_url, export)
    assert refused.returncode == 2
    assert "does not match the sha256" in refused.stderr


def test_models_missing_without_an_export_name_the_setting() -> None:
    with pytest.raises(ArtifactError) as caught:
        import_missing(None, {"nowhere-router:v1": "0" * 64})
    assert "SKEWGUARD_MODEL_EXPORT" in caught.value.message


def test_an_export_that_cannot_be_written_is_unavailable_naming_the_setting(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(SharedStateUnavailable) as caught:
        export_models(str(blocked / "export"), ["nowhere-router:v1"])
    assert caught.value.field == "SKEWGUARD_MODEL_EXPORT"
