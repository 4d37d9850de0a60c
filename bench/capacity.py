"""Capacity of what every gateway replica shares: the prediction log in PostgreSQL, Feast's Redis.

    .venv/bin/python bench/capacity.py [--seconds 5] [--postgres URL] [--redis HOST:PORT]

1. The log: one writer, as a gateway's, inserts records like the demo's (a row of a real
   cascade answer, image summarised) in batches; it prints records/s and the CPU the
   PostgreSQL server spent per record (its backend process, read from /proc), so
   ``1e6 / µs`` is what one PostgreSQL core absorbs, whatever the number of replicas.
2. The online store: Feast reads of one customer per call (a single-row request) and of 16
   (concurrent requests gathered), through the gateway's own reader, on Redis; it prints
   calls/s and the CPU the Redis server process spent per call (from /proc: network I/O
   included, and anything else that Redis served meanwhile), so ``1e6 / µs`` is what one
   Redis core serves.

The servers are the machine's (PostgreSQL on 127.0.0.1:5432, database ``test``; Redis on
127.0.0.1:6379); a table and a Feast project of their own are made and removed.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/capacity.py`: import the bench package from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil

VIEW = "customer_stats"
FEATURES = ("orders_30d", "return_rate_90d", "account_age_days")
"""The returns example's feature view, as a replica of its cascade reads it."""


def _process_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def log_rate(url: str, seconds: float, batch: int = 256) -> dict[str, float]:
    """One writer's records/s into PostgreSQL, and the server's CPU µs per record."""
    import psycopg

    from skewguard.predictionlog.records import PredictionRecord
    from skewguard.predictionlog.store import COLUMNS, open_store

    table = f"capacity_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url) as probe:
        backends = {row[0] for row in probe.execute("SELECT pid FROM pg_stat_activity").fetchall()}
    store = open_store(url, table=table)
    store.prepare()
    record = PredictionRecord(
        request_id="r", row=0, ts=time.time(), cascade="returns",
        fields={"customer_id": 100123, "price": 49.9, "category": "shoes", "description": "red shoes",
                "order_ts": "2026-06-01T10:00:00", "image": {"sha256": "0" * 64, "bytes": 2400}},
        online_features={"orders_30d": 3.0, "return_rate_90d": 0.11, "account_age_days": 253.0},
        defaults_used=False, prediction=0, probabilities={"0": 0.85, "1": 0.15}, route="retail",
        versions={"cascade": "cascade-returns:x", "router": "returns-router:x"}, flags=[],
    )  # fmt: skip
    written, n = 0, 0
    store.write([[getattr(record, c) if c != "request_id" else "warm" for c in COLUMNS]])
    with psycopg.connect(url) as probe:
        server = [
            row[0]
            for row in probe.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
            if row[0] not in backends
        ]
    cpu_before = sum(_process_cpu(pid) for pid in server)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        rows = [
            [getattr(record, c) if c != "request_id" else f"{n}-{i}" for c in COLUMNS] for i in range(batch)
        ]
        written += store.write(rows)
        n += 1
    elapsed = time.perf_counter() - started
    cpu = sum(_process_cpu(pid) for pid in server) - cpu_before
    store.close()
    with psycopg.connect(url, autocommit=True) as cleanup:
        cleanup.execute(f"DROP TABLE IF EXISTS {table}")
    return {"records_per_s": written / elapsed, "server_us_per_record": cpu / written * 1e6, "batch": batch}


def feast_rate(redis: str, seconds: float) -> dict[str, float]:
    """Feast online reads per second on Redis (1 and 16 customers a call), and Redis's µs per call."""
    import pandas as pd
    import redis as redis_client

    from skewguard.cli_examples import example_dir, write_data
    from skewguard.featurestore.connection import FeastConfig
    from skewguard.featurestore.online import OnlineFeatureReader
    from skewguard.featurestore.repository import apply_repository, latest_event_time, materialize

    example = Path(tempfile.mkdtemp(prefix="skewguard-capacity-")) / "returns"
    shutil.copytree(example_dir("returns"), example, ignore=shutil.ignore_patterns("data", "__pycache__"))
    write_data(example, 2_000, 3)
    project = f"capacity_{uuid.uuid4().hex[:8]}"
    config = FeastConfig(
        state_dir=example.parent / "feast",
        project=project,
        online_store="redis",
        redis_url=redis,
        repo_dir=example / "feature_repo",
    )
    apply_repository(config)
    materialize(config, [VIEW], end=latest_event_time(config, [VIEW]))
    reader = OnlineFeatureReader(config, entity_key="customer_id", refs={f: f"{VIEW}:{f}" for f in FEATURES})
    stats = pd.read_parquet(example / "data" / "customer_stats.parquet", columns=["customer_id"])
    ids = [int(i) for i in stats["customer_id"].unique()]
    host, _, port = redis.partition(":")
    info: dict[str, Any] = redis_client.Redis(host=host, port=int(port or 6379)).info("server")  # type: ignore[assignment]
    pid = int(info["process_id"])
    results = {}
    for size in (1, 16):
        chosen = ids[:size]
        before = _process_cpu(pid)
        calls = _repeat(lambda: reader.read(chosen), seconds)  # noqa: B023 - called within this iteration
        results[f"calls_per_s_{size}"] = calls / seconds
        results[f"redis_us_per_call_{size}"] = (_process_cpu(pid) - before) / calls * 1e6
    return results


def _repeat(call: Callable[[], Any], seconds: float) -> int:
    call()
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="127.0.0.1:6379")
    args = parser.parse_args()
    os.environ.setdefault("SKEWGUARD_HOME", tempfile.mkdtemp(prefix="skewguard-capacity-"))
    log = log_rate(args.postgres, args.seconds)
    print(
        f"prediction log, one writer, batches of {log['batch']:.0f}: {log['records_per_s']:,.0f} records/s; "
        f"PostgreSQL {log['server_us_per_record']:.1f} µs of CPU per record "
        f"(~{1e6 / log['server_us_per_record']:,.0f} records/s per PostgreSQL core)"
    )
    feast = feast_rate(args.redis, args.seconds)
    for size in (1, 16):
        us = feast[f"redis_us_per_call_{size}"]
        print(
            f"Feast online read, {size:>2} customer(s) a call: {feast[f'calls_per_s_{size}']:,.0f} calls/s "
            f"from one client; Redis {us:.1f} µs of CPU per call (~{1e6 / us:,.0f} calls/s per Redis core)"
        )


if __name__ == "__main__":
    main()
