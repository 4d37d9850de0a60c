"""skewguard.monitoring.forked: the function runs in a forked child and its value (or failure) comes back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: one thread, so ``can_fork()`` holds whatever ran before in pytest.
SCRIPT = """
import json, os
from skewguard.monitoring.forked import Forked, can_fork
from skewguard.errors import DriftReportError

def where(x):
    return {"pid": os.getpid(), "twice": [v * 2 for v in x]}

def fails():
    raise ValueError("no such column 'price'")

def dies():
    os._exit(3)

out = {"parent": os.getpid(), "can_fork": can_fork()}
job = Forked(where, [1, 2, 3])
out["forked"], out["value"] = job.forked, job.result()
for name, fn in (("fails", fails), ("dies", dies)):
    try:
        Forked(fn).result()
        out[name] = "no error"
    except DriftReportError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_a_forked_function_returns_its_value_and_its_failures_name_the_cause() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["can_fork"]
    assert out["forked"]
    assert out["value"]["twice"] == [2, 4, 6]
    assert out["value"]["pid"] != out["parent"]  # computed in the child
    assert out["fails"] == "ValueError: no such column 'price'"
    assert "ended without a result" in out["dies"]
    assert "wait status 768" in out["dies"]


def test_with_other_threads_it_runs_in_this_process() -> None:
    import os
    import threading

    from skewguard.monitoring.forked import Forked

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        job = Forked(os.getpid)
        assert not job.forked
        assert job.result() == os.getpid()
    finally:
        stop.set()
        worker.join()
