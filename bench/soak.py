"""Soak: the gateway under sustained load at half its capacity, then SIGTERM; nothing may be lost.

    .venv/bin/python bench/soak.py [--minutes 3 | --seconds S] [--rate R] [--orders 20000] [--home DIR]

In a throw-away SKEWGUARD_HOME it runs ``skewguard demo-data`` and ``skewguard train`` (or
reuses ``--home``), then:

1. capacity: a gateway (``skewguard serve``) driven flat out by ``bench/gateway_load.py``
   (async httpx, the soak's own kind of client) at c=16 for a few seconds; its 2xx req/s
   is the capacity (with ``--rate``, this step is skipped);
2. soak: a fresh gateway, with a prediction log of its own, driven at half that rate by a
   fixed-rate generator (async httpx, open loop: a request is sent when it is due, not
   when the previous one returned; one due while all its connections wait is counted as
   missed) for the given time; RSS of the gateway is sampled all along (the leak check);
3. SIGTERM while the load still runs; the generator keeps sending until the port closes.

It prints req/s, p50/p99, the count of 5xx, responses answered 200 against records in the
prediction log, and RSS at start and end, then one ``SOAK-RESULT {json}`` line. The exit
status is 1 when a 5xx was answered or the records differ from the 200s.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/soak.py`: import the bench package from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.gateway import BIN, environment, load, request_bodies
from bench.gateway_report import describe_machine
from bench.gateway_servers import Server, free_port, start, stop, tree_rss, wait_ready

CASCADE = "returns"
N_BODIES = 256
CAPACITY_CONCURRENCY = 16
CAPACITY_TOOL = "httpx"
"""The soak's own kind of generator: wrk drives the gateway ~2x harder for the same CPU, so half
of a wrk-measured capacity was more than an async httpx generator could send next to the
gateway on 2 vCPUs (measured: 291 req/s asked, ~220 sent, every request late)."""
CONNECTIONS = 32
"""Connections of the fixed-rate generator: the most requests it keeps in flight at once."""
TIMEOUT_S = 10.0
RSS_EVERY_S = 5.0
TAIL_S = 1.0
"""How long the generator goes on after SIGTERM (the port usually closes sooner)."""


@dataclass(slots=True)
class Tally:
    """What the generator saw: statuses, transport errors, latencies of the 200s, its own lag."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    late: int = 0
    """Requests sent more than 50 ms after they were due (the generator's own loop was slow)."""
    missed: int = 0
    """Requests not sent: due while all ``CONNECTIONS`` were waiting for answers."""

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def errors_5xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


@dataclass(slots=True)
class SoakResult:
    """One soak's figures (``SOAK-RESULT`` prints them as JSON)."""

    rate_target: float
    seconds: float
    sent: int
    ok: int
    ok_rps: float
    p50_ms: float
    p99_ms: float
    errors_5xx: int
    statuses: dict[str, int]
    transport_errors: dict[str, int]
    late: int
    missed: int
    records: int
    log_warnings: list[str]
    rss_mb: list[float]
    exit_code: int | None
    capacity_rps: float | None = None


def gateway_env(env: dict[str, str], log_db: Path, port: int) -> dict[str, str]:
    """The gateway's settings: its own port and prediction log, no champion watcher."""
    return env | {
        "SKEWGUARD_PORT": str(port),
        "SKEWGUARD_WATCH_SECONDS": "0",
        "SKEWGUARD_LOG_URL": f"sqlite:///{log_db}",
    }


def measure_capacity(env: dict[str, str], folder: Path, bodies: Path, cascade: str, seconds: int) -> float:
    """2xx req/s of a gateway driven flat out at c=16 by async httpx, after a 2 s warm-up."""
    port = free_port()
    env = gateway_env(env, folder / "capacity.db", port)
    server = start("capacity", [str(BIN / "skewguard"), "serve"], env, folder, front=True)
    try:
        wait_ready(server, f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/v1/cascades/{cascade}/predict"
        load(url, bodies, CAPACITY_CONCURRENCY, 2, CAPACITY_TOOL)
        result = load(url, bodies, CAPACITY_CONCURRENCY, seconds, CAPACITY_TOOL)
    finally:
        stop([server])
    ok = sum(n for status, n in result["statuses"].items() if 200 <= int(status) < 300)
    return float(ok / result["duration_s"])


class FixedRate:
    """An open-loop generator: request ``i`` is sent at ``i / rate`` seconds, on a free connection.

    Each of ``CONNECTIONS`` clients holds one keep-alive connection (a shared pool scans its
    connections on every request, which made the generator the bottleneck in
    ``bench/gateway_load.py``); a request waits only when all of them are busy.
    """

    def __init__(self, url: str, bodies: Sequence[bytes], rate: float) -> None:
        import httpx

        self.url, self.bodies, self.rate = url, bodies, rate
        self.tally = Tally()
        self.gone = asyncio.Event()  # the port refused a connection: the server has stopped
        self._clients = [
            httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=TIMEOUT_S)
            for _ in range(CONNECTIONS)
        ]
        self._idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, seconds: float, server: Server) -> Tally:
        """Send for ``seconds``, SIGTERM ``server``, go on until its port closes (``TAIL_S`` at most)."""
        for client in self._clients:
            self._idle.put_nowait(client)
        started = time.perf_counter()
        signalled: float | None = None
        while not self.gone.is_set():
            now = time.perf_counter()
            if signalled is None and now - started >= seconds:
                server.process.send_signal(signal.SIGTERM)
                signalled = now
            if signalled is not None and now - signalled >= TAIL_S:
                break
            await self._send_due(started, now)
            await asyncio.sleep(0.002)
        if self._tasks:
            await asyncio.wait(self._tasks)
        for client in self._clients:
            await client.aclose()
        return self.tally

    async def _send_due(self, started: float, now: float) -> None:
        """Send what is due; a request due while every connection is busy is missed, not queued.

        Queueing would hide a server that cannot keep up behind an ever longer backlog in the
        generator (and push SIGTERM past the planned end); ``missed`` shows it instead.
        """
        tally = self.tally
        due = int((now - started) * self.rate)
        while tally.sent + tally.missed < due and not self.gone.is_set():
            if self._idle.empty():
                tally.missed += due - tally.sent - tally.missed
                return
            client = self._idle.get_nowait()
            index = tally.sent + tally.missed
            if time.perf_counter() - (started + index / self.rate) > 0.05:
                tally.late += 1
            task = asyncio.create_task(self._post(client, self.bodies[index % len(self.bodies)]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tally.sent += 1

    async def _post(self, client: Any, body: bytes) -> None:
        import httpx

        begin = time.perf_counter()
        try:
            response = await client.post(self.url, content=body, headers={"content-type": "application/json"})
        except httpx.TransportError as exc:
            self.tally.errors[type(exc).__name__] += 1
            if isinstance(exc, httpx.ConnectError):
                self.gone.set()
        else:
            self.tally.statuses[response.status_code] += 1
            if response.status_code == 200:
                self.tally.latencies.append(time.perf_counter() - begin)
        finally:
            self._idle.put_nowait(client)


@contextlib.contextmanager
def sampling(pid: int, samples: list[int], every: float = RSS_EVERY_S) -> Iterator[None]:
    """Append the RSS of ``pid``'s process tree to ``samples`` every ``every`` seconds."""
    halt = threading.Event()

    def sample() -> None:
        while not halt.wait(every):
            samples.append(tree_rss(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        halt.set()
        sampler.join()


def count_records(log_db: Path) -> int:
    from skewguard.predictionlog.store import open_store

    store = open_store(f"sqlite:///{log_db}")
    try:
        return store.count()
    finally:
        store.close()


def soak(
    env: dict[str, str], folder: Path, bodies: Sequence[bytes], *, cascade: str, rate: float, seconds: float
) -> SoakResult:
    """Start a gateway, drive it at ``rate`` for ``seconds``, SIGTERM it under load, count its log."""
    port = free_port()
    log_db = folder / f"soak-{int(time.time())}.db"
    server = start(
        "soak", [str(BIN / "skewguard"), "serve"], gateway_env(env, log_db, port), folder, front=True
    )
    rss: list[int] = []
    try:
        wait_ready(server, f"http://127.0.0.1:{port}/readyz")
        rss.append(tree_rss(server.process.pid))
        url = f"http://127.0.0.1:{port}/v1/cascades/{cascade}/predict"
        with sampling(server.process.pid, rss):
            tally = asyncio.run(FixedRate(url, bodies, rate).run(seconds, server))
        exit_code = server.process.wait(timeout=30)
    finally:
        stop([server])
    rss = [value for value in rss if value > 0]  # a sample taken after the exit finds no process
    log_text = server.log.read_text(errors="replace")  # the log's own warnings: outages, drops
    ordered = sorted(tally.latencies) or [0.0]
    return SoakResult(
        rate_target=rate,
        seconds=seconds,
        sent=tally.sent,
        ok=tally.ok,
        ok_rps=tally.ok / seconds,
        p50_ms=1e3 * ordered[int(0.50 * (len(ordered) - 1))],
        p99_ms=1e3 * ordered[int(0.99 * (len(ordered) - 1))],
        errors_5xx=tally.errors_5xx,
        statuses={str(status): n for status, n in sorted(tally.statuses.items())},
        transport_errors=dict(tally.errors),
        late=tally.late,
        missed=tally.missed,
        records=count_records(log_db),
        log_warnings=[line[-200:] for line in log_text.splitlines() if "Prediction log" in line][:5],
        rss_mb=[round(value / 2**20, 1) for value in rss],
        exit_code=exit_code,
    )


def report(result: SoakResult, load_before: float) -> list[str]:
    rss = result.rss_mb
    return [
        "skewguard soak: fixed-rate single-row POSTs of real demo orders, then SIGTERM under load",
        describe_machine(),
        f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
        f"capacity (c={CAPACITY_CONCURRENCY}, 2xx req/s): "
        + (f"{result.capacity_rps:,.0f}" if result.capacity_rps else "given"),
        f"target rate {result.rate_target:,.0f} req/s for {result.seconds:,.0f} s; sent {result.sent:,} "
        f"({result.late:,} more than 50 ms late), missed {result.missed:,} (all connections busy)",
        f"answered 200: {result.ok:,} ({result.ok_rps:,.0f} req/s), p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms",
        f"statuses {result.statuses}; 5xx {result.errors_5xx}; no answer (after SIGTERM) "
        f"{result.transport_errors or 0}",
        f"prediction log: {result.records:,} records for {result.ok:,} responses answered 200 "
        f"({'equal' if result.records == result.ok else 'DIFFERENT'}); gateway exit code {result.exit_code}",
        *(f"gateway log: {line}" for line in result.log_warnings),
        f"gateway RSS MB: start {rss[0] if rss else 0:,.0f}, end {rss[-1] if rss else 0:,.0f}, "
        f"max {max(rss, default=0):,.0f} ({len(rss)} samples, every {RSS_EVERY_S:g} s)",
        "SOAK-RESULT " + json.dumps(asdict(result)),
    ]


def prepare(home: Path, orders: int) -> tuple[dict[str, str], list[bytes]]:
    """Demo data and the trained cascade in ``home`` (reused when present); the request bodies."""
    from bench.gateway import train_examples

    env, log = environment(home), home / "setup.log"
    project = train_examples(home, orders, env, log, text=False)
    bodies, _ = request_bodies(project / "data" / "orders.parquet", N_BODIES)
    return env, [body.encode() for body in bodies]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, help="instead of --minutes")
    parser.add_argument("--rate", type=float, help="req/s to sustain (default: half the measured capacity)")
    parser.add_argument("--capacity-seconds", type=int, default=10)
    parser.add_argument("--orders", type=int, default=20_000, help="demo orders to train on")
    parser.add_argument("--home", type=Path, help="keep state here and reuse it (default: temporary)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or args.minutes * 60
    if args.seconds <= 0 or (args.rate is not None and args.rate <= 0):
        parser.error("--seconds/--minutes and --rate must be positive.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare, measure capacity, soak, print; 1 if a 5xx was answered or a record is missing."""
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="skewguard-soak-") as scratch:
        home = Path(args.home or scratch).resolve()
        home.mkdir(parents=True, exist_ok=True)
        env, bodies = prepare(home, args.orders)
        capacity, rate = None, args.rate
        if rate is None:
            path = home / "soak-bodies.jsonl"
            path.write_bytes(b"".join(body + b"\n" for body in bodies))
            capacity = measure_capacity(env, home, path, CASCADE, args.capacity_seconds)
            rate = capacity / 2
        result = soak(env, home, bodies, cascade=CASCADE, rate=rate, seconds=args.seconds)
        result.capacity_rps = capacity
    print("\n".join(report(result, load_before)), flush=True)
    return 0 if result.errors_5xx == 0 and result.records == result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
