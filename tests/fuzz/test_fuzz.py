"""The coverage-guided fuzzers, for a bounded time each, and the inputs they once found, replayed.

Each harness (``fuzz_body.py``: the request-body parser and the reading of rows;
``fuzz_rows.py``: row encoding; ``fuzz_image.py``: image decoding) runs under atheris
(libFuzzer) in a subprocess for ``SECONDS``, starting from its committed corpus
(``corpus/<harness>``, read only: what it finds new goes to a temporary folder). A finding —
an uncaught exception, a 5xx error, an input slower than ``-timeout`` — fails the test with
the input and the traceback. The number of inputs run is printed.

``findings/<harness>/`` keeps every input a fuzzer once failed on, replayed through the
harness on every run (the gateway's tests send the same through HTTP).
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
HARNESSES = ("body", "rows", "image")
SECONDS = 12
"""Per harness: three of them stay within ~40 s of the test suite's time."""
TIMEOUT_S = 10
"""libFuzzer's ``-timeout``: one input slower than this is a finding."""


def _findings() -> list[Path]:
    return sorted(p for p in (HERE / "findings").glob("*/*") if p.is_file())


@pytest.mark.fuzz
@pytest.mark.slow
@pytest.mark.parametrize("harness", HARNESSES)
def test_the_fuzzer_finds_nothing_within_its_time(harness: str, tmp_path: Path) -> None:
    script = HERE / f"fuzz_{harness}.py"
    command = [
        sys.executable,
        str(script),
        f"-max_total_time={SECONDS}",
        f"-timeout={TIMEOUT_S}",
        "-rss_limit_mb=3000",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
        str(tmp_path),  # new inputs go here: the committed corpus stays as it is
        str(HERE / "corpus" / harness),
    ]
    done = subprocess.run(
        _from_a_small_parent(command), capture_output=True, text=True, timeout=SECONDS + 120, check=False
    )
    runs = re.search(r"Done (\d+) runs in (\d+) second", done.stderr)
    print(f"\nfuzz_{harness}: {runs.group(0) if runs else 'no summary'}")
    crashes = [p for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
    shown = [f"{p.name}: {base64.b64encode(p.read_bytes()[:2000]).decode()}" for p in crashes]
    seed = re.search(r"INFO: Seed: \d+", done.stderr)  # -seed=N replays this run
    assert done.returncode == 0, "\n".join([seed.group(0) if seed else "", done.stderr[-4000:], *shown])
    assert runs is not None, done.stderr[-2000:]
    assert int(runs.group(1)) > 1_000  # it ran, and fast enough to mean something


def _from_a_small_parent(command: list[str]) -> list[str]:
    """``command`` forked from a shell rather than from this (large) test process.

    libFuzzer's ``-rss_limit_mb`` reads the peak RSS from ``getrusage``, and Linux carries a
    process's peak across ``exec`` from the memory it was forked with: started straight from
    a pytest process that holds gigabytes, the harness would count them as its own and report
    an out-of-memory at its first input. A shell's background job starts from the shell's small
    memory instead.
    """
    return ["sh", "-c", '"$@" & wait $!', "fuzz", *command]


@pytest.mark.parametrize("finding", _findings(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_what_the_fuzzers_found_stays_fixed(finding: Path) -> None:
    """The harness run on that one input (libFuzzer's replay: a file argument instead of a folder)."""
    command = [sys.executable, str(HERE / f"fuzz_{finding.parent.name}.py"), str(finding)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
