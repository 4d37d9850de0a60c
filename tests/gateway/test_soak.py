"""A minute of ``bench/soak.py``: half the measured capacity, then SIGTERM; no 5xx, no lost record.

The by-hand soak trains its own cascade and runs for minutes (figures in the README); this
runs the same capacity measurement, fixed-rate load and SIGTERM against ``skewguard serve``
over the session's champion ``gwtest``, so that no training is needed.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from returns_data import DemoData

from bench import soak
from tests.gateway.conftest import CASCADE, request_row
from tests.gateway.test_faults import materialized_home

SECONDS = 60
CAPACITY_SECONDS = 5


@pytest.mark.slow
@pytest.mark.integration
def test_a_minute_at_half_capacity_then_sigterm_answers_no_5xx_and_logs_every_200(
    tmp_path: Path, demo: DemoData, champion_tag: str
) -> None:
    home = materialized_home(tmp_path / "home", demo)
    env = {**os.environ, "SKEWGUARD_HOME": str(home), "SKEWGUARD_CASCADES": CASCADE}
    bodies = [json.dumps({"rows": [request_row(demo, i)]}).encode() for i in range(-soak.N_BODIES, 0)]
    path = tmp_path / "bodies.jsonl"
    path.write_bytes(b"".join(body + b"\n" for body in bodies))

    capacity = soak.measure_capacity(env, tmp_path, path, CASCADE, CAPACITY_SECONDS)
    result = soak.soak(env, tmp_path, bodies, cascade=CASCADE, rate=capacity / 2, seconds=SECONDS)
    result.capacity_rps = capacity
    print("\n" + "\n".join(soak.report(result, os.getloadavg()[0])))

    assert result.exit_code in (0, -signal.SIGTERM)
    assert result.errors_5xx == 0, result.statuses
    assert result.statuses == {"200": result.ok}
    assert result.ok >= SECONDS  # the capacity depends on the shared machine; a load, not nothing
    assert result.ok + sum(result.transport_errors.values()) == result.sent  # every request accounted for
    assert result.records == result.ok
    # The only requests without an answer met the port closing after SIGTERM.
    assert set(result.transport_errors) <= {"ConnectError", "RemoteProtocolError", "ReadError", "WriteError"}
    assert len(result.rss_mb) >= SECONDS // int(soak.RSS_EVERY_S)
