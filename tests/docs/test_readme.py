"""The README as a new user follows it: every block marked runnable, in order, in an empty folder.

A block is runnable when the line before its opening fence is ``<!-- runnable -->``; ``sh``
blocks run as they are, ``python`` blocks through the installed interpreter. They run as one
bash script (``set -e``: a failing command fails the test), so a server started in the
background by one block answers the next, in a fresh folder with no ``SKEWGUARD_*`` variable
set (the state goes to ``./.skewguard``, as in a clone) and the installed ``skewguard`` first
on the ``PATH``, as ``. .venv/bin/activate`` puts it. The one change to the text: the port,
a free one instead of 8000, which other programs on the machine may hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.docs.conftest import ROOT

README = ROOT / "README.md"
MARKER = "<!-- runnable -->"
_FENCE = re.compile(r"^```(\w+)\s*$")


@dataclass(frozen=True, slots=True)
class Block:
    language: str
    code: str
    line: int


def runnable_blocks(text: str) -> list[Block]:
    """The README's blocks marked runnable, in order, with the line each starts on."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines[:-1]):
        fence = _FENCE.match(lines[i + 1])
        if line.strip() != MARKER:
            continue
        if fence is None or fence[1] not in ("sh", "python"):
            raise AssertionError(f"README.md:{i + 1}: {MARKER} must precede a ```sh or ```python fence")
        end = lines.index("```", i + 2)
        blocks.append(Block(fence[1], "\n".join(lines[i + 2 : end]), i + 3))
    return blocks


def as_script(blocks: list[Block], port: int) -> str:
    parts = ["set -e"]
    for block in blocks:
        code = block.code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        parts.append(f"echo '--- README.md:{block.line}'")
        parts.append(code if block.language == "sh" else f"python - <<'README_PY'\n{code}\nREADME_PY")
    return "\n".join(parts) + "\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _user_environment(port: int) -> dict[str, str]:
    """The environment of a user's shell: no state of the test session, the venv first on PATH."""
    keep = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SKEWGUARD_", "BENTOML_HOME", "PREFECT_", "PROMETHEUS_"))
    }
    venv_bin = str(Path(sys.executable).parent)
    return keep | {"PATH": f"{venv_bin}:{keep.get('PATH', '/usr/bin:/bin')}", "SKEWGUARD_PORT": str(port)}


def _answers(output: str) -> dict[str, dict[str, Any]]:
    """The JSON answers printed by the blocks' curls, by cascade (curl adds no newline after one)."""
    decoder, found = json.JSONDecoder(), {}
    for match in re.finditer(r'\{"cascade":"[^"]*","predictions"', output):
        answer, _ = decoder.raw_decode(output, match.start())
        found[answer["cascade"]] = answer
    return found


def _stop_group(leader: int) -> None:
    """SIGTERM to what the script left running (the gateway), then wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGTERM)
        for _ in range(300):
            time.sleep(0.1)
            os.killpg(leader, 0)
        os.killpg(leader, signal.SIGKILL)


def test_the_readme_marks_the_walk_throughs_runnable() -> None:
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    code = "\n".join(block.code for block in blocks)
    for step in ("skewguard package", "skewguard examples copy", "skewguard train -f", "skewguard serve"):
        assert step in code, f"no runnable README block runs {step!r}"


@pytest.mark.slow
@pytest.mark.integration
def test_every_runnable_block_of_the_readme_works_in_an_empty_folder(tmp_path: Path) -> None:
    port = _free_port()
    script = tmp_path / "readme.sh"
    script.write_text(as_script(runnable_blocks(README.read_text(encoding="utf-8")), port))
    log = tmp_path / "readme.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", str(script)],
            cwd=tmp_path,
            env=_user_environment(port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the gateway it starts in the background is stopped with it
        )
        try:
            status = process.wait(timeout=900)
        finally:
            process.kill()
            process.wait()
            _stop_group(process.pid)
    output = log.read_text(errors="replace")
    assert status == 0, output[-4000:]
    answers = _answers(output)
    assert set(answers) == {"my-returns", "churn"}, output[-4000:]
    mine = answers["my-returns"]["predictions"][0]
    assert mine["route"] in ("reseller", "retail")
    assert set(mine["probabilities"]) == {"0", "1"}
    churn = answers["churn"]["predictions"][0]
    assert [flag["kind"] for flag in churn["skew_flags"]] == ["unseen_category"]
