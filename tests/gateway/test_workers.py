"""Several gateway workers (``SKEWGUARD_WORKERS``): one port, every worker serving, nothing lost.

The real-process test starts ``skewguard serve`` with two workers under gunicorn and checks
what an operator would notice: both workers answer; a scrape of any worker counts the rows
of all; a promotion reaches every worker without a failed request; SIGTERM under load loses
no logged prediction. The marker that carries an admin reload to the other workers is
tested on its own, without processes.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from returns_data import DemoData

from skewguard.bentos.manifest import promote
from skewguard.gateway.peers import READY_PREFIX, Peers
from skewguard.predictionlog.records import read_records
from tests.gateway.conftest import request_row
from tests.gateway.test_faults import _metric
from tests.gateway.test_server import (
    CLIENTS,
    PREDICT,
    Load,
    _row,
    _save_candidate,
    _wait_for,
    _wait_ready,
    gateway,
    home,  # noqa: F401 - the module-scoped fixture of a home with Feast applied
    running,
)

WORKERS = 2


def _workers(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children()


def _serving(worker: psutil.Process, port: int) -> bool:
    """Whether the worker holds an accepted connection on the gateway's port."""
    return any(
        c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
        for c in worker.net_connections(kind="tcp")
    )


@pytest.mark.integration
@pytest.mark.anyio
async def test_two_workers_share_the_port_the_metrics_a_promotion_and_a_graceful_stop(
    home: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    demo: DemoData,
    champion_tag: str,
) -> None:
    new_tag = _save_candidate(champion_tag, threshold=0.35)
    server = gateway(home, tmp_path, SKEWGUARD_WORKERS=str(WORKERS))
    port = int(server.url.rsplit(":", 1)[1])
    rows = [request_row(demo, i) for i in range(-64, 0)]
    try:
        with running(server):
            workers = _workers(server.popen.pid)
            async with Load(server.url, rows) as load, httpx.AsyncClient(base_url=server.url) as admin:
                await asyncio.sleep(1.5)
                serving = [_serving(worker, port) for worker in workers]
                await asyncio.to_thread(promote, new_tag)
                switch = await _wait_for(lambda: load.has_served(new_tag), timeout=5.0)
                await asyncio.sleep(1.0)  # both workers' watchers have looked (every 0.2 s)
                tail = [_row(a)["versions"]["cascade"] for a in load.ok()[-4 * CLIENTS :]]
                metrics_seen = len(load.ok())
                metrics = (await admin.get("/metrics")).text
                private = [w.memory_full_info().uss / w.memory_info().rss for w in workers]
                await asyncio.sleep(0.5)
                server.popen.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(server.popen.wait, 30)
                await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(promote, champion_tag)  # the session's other tests expect their champion
    ok = load.ok()
    records = read_records(f"sqlite:///{tmp_path / 'predictions.db'}")
    rows_counted = sum(
        _metric(metrics, "skewguard_rows_total", cascade="gwtest", route=route)
        for route in ("reseller", "retail")
    )
    print(f"\n{len(ok)} answered by {WORKERS} workers; the promotion was served after {switch:.2f} s")
    print("share of each worker's RSS that is its own (USS/RSS):", [f"{p:.2f}" for p in private])
    assert len(workers) == WORKERS
    assert serving == [True] * WORKERS, "each worker should hold some of the 16 clients' connections"
    assert tail == [new_tag] * len(tail), "every worker serves the promoted cascade"
    assert metrics_seen <= rows_counted <= len(ok), "one scrape counts the rows every worker served"
    assert 0 < _metric(metrics, "skewguard_prediction_log_written_total") <= len(ok)
    assert code in (0, -signal.SIGTERM), server.tail()
    assert {a.status for a in load.answers} <= {200, None}, [
        a.body for a in load.answers if a.status not in (200, None)
    ]
    assert len(ok) > 100
    # The workers share the master's pages: the Feast store's modules and onnxruntime set up, the heap frozen
    # before the fork (measured: 0.20 of each worker's RSS is its own; 0.48–0.51 without either).
    assert max(private) < 0.35, private
    assert len(records) == len(ok)  # every answered prediction logged, by whichever worker answered it
    assert len({r["request_id"] for r in records}) == len(records)


@pytest.mark.integration
@pytest.mark.anyio
async def test_a_worker_that_exits_is_replaced_and_the_others_keep_their_shared_state(
    home: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    demo: DemoData,
) -> None:
    server = gateway(home, tmp_path, SKEWGUARD_WORKERS=str(WORKERS))
    with running(server):
        before = _workers(server.popen.pid)
        before[0].terminate()  # a graceful exit: it runs its interpreter's exit hooks
        await asyncio.to_thread(before[0].wait, 20)
        replaced = await _wait_for(
            lambda: (
                len(pids := {w.pid for w in _workers(server.popen.pid)}) == WORKERS
                and pids != {w.pid for w in before}
            ),
            timeout=30.0,
        )
        ready = await asyncio.to_thread(_wait_ready, server, 30.0)
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            answers = [await client.post(PREDICT, json=request_row(demo, i)) for i in range(-20, 0)]
            metrics = (await client.get("/metrics")).text
    print(f"\nworker replaced after {replaced:.2f} s, all ready {ready:.2f} s later")
    assert [a.status_code for a in answers] == [200] * 20, answers[-1].text
    counted = sum(
        _metric(metrics, "skewguard_rows_total", cascade="gwtest", route=route)
        for route in ("reseller", "retail")
    )
    assert counted >= 20  # the shared metric files outlived the worker that left


def test_an_admin_reload_is_announced_to_the_other_workers(tmp_path: Path) -> None:
    one, other = Peers(tmp_path, WORKERS), Peers(tmp_path, WORKERS)
    assert not other.reload_announced()  # nothing announced yet
    one.announce_reload()
    assert not one.reload_announced()  # its own announcement: it has reloaded already
    assert other.reload_announced()
    assert not other.reload_announced()  # once per announcement
    one.announce_reload()
    one.announce_reload()
    assert other.reload_announced()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staged files left


def test_ready_only_when_every_live_worker_marked_itself(tmp_path: Path) -> None:
    peers = Peers(tmp_path, WORKERS)
    assert peers.not_ready() == WORKERS
    peers.mark_ready()
    assert peers.not_ready() == 1
    (tmp_path / f"{READY_PREFIX}{2**22 + 12345}").touch()  # a worker that died without unmarking
    assert peers.not_ready() == 1
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / f"{READY_PREFIX}{sibling.pid}").touch()
        assert peers.not_ready() == 0
    finally:
        sibling.kill()
        sibling.wait()
    assert peers.not_ready() == 1
    peers.unmark_ready()
    assert peers.not_ready() == WORKERS
