"""Hostile burst: valid predicts alone, then mixed with the bad requests of the hostile-input table.

    .venv/bin/python bench/hostile_burst.py [--requests 2000] [--concurrency 64] [--home DIR]

In a throw-away SKEWGUARD_HOME (or ``--home``, one ``make run`` has set up) it trains the demo
cascade if there is none, fills the Feast online store and starts ``skewguard serve``. Then
bursts of ``--requests`` requests each over ``--concurrency`` connections, ``--rounds`` of each
kind in alternating order: valid single-row predicts alone, and the same number with every
other request a hostile one
(``hostile_requests``: deep nesting, 400-digit numbers, lone-surrogate keys, a hundred
2000×2000 images, admin without a token, a 1 MB header, half a request line, a body cut off
mid-way). Prints the answers by status, the p99 of the valid requests in each round, the
median p99 of each kind, their ratio and the machine. The client shares the machine's CPUs
with the server (and with whatever else runs there: hence the rounds).

``hostile_requests`` and ``run_burst`` are also what the gateway's test of the table sends.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/hostile_burst.py`: import the bench package from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import base64
import json
import statistics
import struct
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

DEEP = 1_100
"""Nesting of the deep bodies: past orjson's 1,024 levels, as the table's "1,000+"."""
HUGE = "7" * 400
"""A 400-digit integer literal."""


@dataclass(frozen=True, slots=True)
class Hostile:
    """One request of a burst: where it goes, what it carries, the status it must get.

    ``kind`` "http" is a normal request; "raw" sends ``content`` as bytes on a socket of its
    own (half a request line, a body cut off), and ``status`` None means the client leaves
    without waiting for any answer.
    """

    name: str
    status: int | None
    content: bytes = b""
    path: str = ""
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    kind: str = "http"


@dataclass(slots=True)
class Answer:
    name: str
    expected: int | None
    status: int | None
    seconds: float
    error: str = ""


@dataclass(slots=True)
class Burst:
    answers: list[Answer] = field(default_factory=list)

    def statuses(self) -> Counter[tuple[str, int | None]]:
        return Counter((a.name, a.status) for a in self.answers)

    def unexpected(self) -> list[Answer]:
        return [a for a in self.answers if a.status != a.expected]

    def p99_ms(self, name: str = "valid") -> float:
        seconds = sorted(a.seconds for a in self.answers if a.name == name)
        return seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] * 1000


def png_bilevel(side: int) -> bytes:
    """A valid 1-bit PNG of side² black pixels: a few hundred bytes that decode to side² pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)
    idat = zlib.compress(row * side, 9)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _deep(inner: str, levels: int, kind: str = "list") -> str:
    if kind == "list":
        return "[" * levels + inner + "]" * levels
    return '{"a": ' * levels + inner + "}" * levels


def _with(row: dict[str, Any], name: str, raw_value: str) -> bytes:
    """``row`` as JSON with ``name``'s value replaced by ``raw_value`` as written (any JSON text)."""
    marker = "__hostile_value__"
    return json.dumps(row | {name: marker}).replace(f'"{marker}"', raw_value).encode()


def hostile_requests(row: dict[str, Any], predict: str) -> list[Hostile]:
    """Every bad request of the table, built from a valid ``row`` sent to ``predict``."""
    image = base64.b64encode(png_bilevel(2_000)).decode()
    big_images = json.dumps({"rows": [row | {"image": image}] * 100}).encode()
    long_header = (("x-padding", "a" * 1_000_000),)
    return [
        Hostile("deep list in a field", 422, _with(row, "price", _deep("1", DEEP))),
        Hostile("deep object in a field", 422, _with(row, "price", _deep("1", DEEP, "object"))),
        Hostile("deep body", 422, _deep("1", DEEP).encode()),
        Hostile("deep body of objects", 422, _deep("1", DEEP, "object").encode()),
        Hostile("400-digit price", 422, _with(row, "price", HUGE)),
        Hostile("400-digit quantity", 422, _with(row, "quantity", HUGE)),
        Hostile("400-digit order_ts", 422, _with(row, "order_ts", HUGE)),
        Hostile("lone-surrogate key in a row", 422, json.dumps(row | {"\ud800": 1}).encode()),
        Hostile("lone-surrogate key beside rows", 422, json.dumps({"rows": [row], "\ud800": 1}).encode()),
        Hostile("100 rows of 2000×2000 images", 413, big_images),
        Hostile("unexpected field", 422, json.dumps(row | {"colour": "red"}).encode()),
        Hostile("admin without a token", 403, path="/v1/admin/reload"),
        Hostile("1 MB header", 431, json.dumps(row).encode(), headers=long_header),
        Hostile("half a request line", 408, f"POST {predict[: len(predict) // 2]}".encode(), kind="raw"),
        Hostile("body cut off", None, _cut_off(predict, json.dumps(row).encode()), kind="raw"),
    ]


def _cut_off(predict: str, body: bytes) -> bytes:
    head = f"POST {predict} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
    return head.encode() + f"content-length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2]


async def run_burst(url: str, requests: Sequence[Hostile], concurrency: int, predict: str) -> Burst:
    """Send ``requests`` in order over ``concurrency`` workers; every answer with its status."""
    burst, queue = Burst(), asyncio.Queue[Hostile]()
    for request in requests:
        queue.put_nowait(request)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                request = queue.get_nowait()
                burst.answers.append(await _send(client, url, request, predict))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return burst


async def _send(client: httpx.AsyncClient, url: str, request: Hostile, predict: str) -> Answer:
    started = time.monotonic()
    try:
        if request.kind == "raw":
            status = await _send_raw(url, request.content, wait=request.status is not None)
        else:
            response = await client.request(
                request.method,
                request.path or predict,
                content=request.content,
                headers={"content-type": "application/json", **dict(request.headers)},
            )
            status = response.status_code
    except (httpx.TransportError, OSError) as exc:
        return Answer(request.name, request.status, None, time.monotonic() - started, type(exc).__name__)
    return Answer(request.name, request.status, status, time.monotonic() - started)


async def _send_raw(url: str, data: bytes, *, wait: bool) -> int | None:
    """``data`` on a connection of its own; the status the server answers, if ``wait``."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        if not wait:
            return None
        answer = await asyncio.wait_for(reader.read(), timeout=60.0)  # until the server closes
        return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    finally:
        writer.close()


def mixed(valid: Sequence[Hostile], hostile: Sequence[Hostile], total: int) -> list[Hostile]:
    """``total`` requests, every other one hostile (each hostile kind in turn), the rest valid."""
    requests = []
    for i in range(total):
        pool = hostile if i % 2 else valid
        requests.append(pool[(i // 2) % len(pool)])
    return requests


def valid_requests(rows: Sequence[dict[str, Any]]) -> list[Hostile]:
    return [Hostile("valid", 200, json.dumps(row).encode()) for row in rows]


def _setup(home: Path) -> dict[str, str]:
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("SKEWGUARD_")}
    env |= {"SKEWGUARD_HOME": str(home), "BENTOML_HOME": str(home / "bentoml")}
    env |= {"PREFECT_HOME": str(home / "prefect"), "DO_NOT_TRACK": "1", "BENTOML_DO_NOT_TRACK": "true"}
    skewguard = str(Path(sys.executable).with_name("skewguard"))
    project, file = home / "project", str(home / "project" / "cascade.yaml")
    copy = [["examples", "copy", "returns", str(project)]] if not project.exists() else []
    for command in (
        *copy,
        ["train", "-f", file, "--if-missing"],
        ["features", "apply", "-f", file],
        ["features", "materialize", "-f", file],
    ):
        subprocess.run([skewguard, *command], env=env, check=True, capture_output=True)
    return env


def _rows(home: Path, n: int) -> list[dict[str, Any]]:
    import pandas as pd
    from returns_data import request_row

    orders = pd.read_parquet(home / "project" / "data" / "orders.parquet").tail(n)
    return [request_row(order) for _, order in orders.iterrows()]


async def _bursts(
    url: str, rows: list[dict[str, Any]], total: int, concurrency: int, rounds: int
) -> tuple[list[Burst], list[Burst]]:
    """``rounds`` of each burst, alternating which goes first: neighbours' load shifts over time."""
    predict = "/v1/cascades/returns/predict"
    valid = valid_requests(rows)
    hostile = hostile_requests(rows[0], predict)
    await run_burst(url, valid[:concurrency], concurrency, predict)  # warm-up: connections, first runs
    alone, together = [], []
    for i in range(rounds):
        for kind in ("alone", "mixed") if i % 2 == 0 else ("mixed", "alone"):
            if kind == "alone":
                alone.append(await run_burst(url, mixed(valid, valid, total), concurrency, predict))
            else:
                together.append(await run_burst(url, mixed(valid, hostile, total), concurrency, predict))
    return alone, together


def main(argv: Sequence[str] | None = None) -> int:
    import subprocess
    import tempfile

    from bench.gateway_report import describe_machine
    from bench.gateway_servers import free_port, wait_ready

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--home", type=Path, default=None)
    options = parser.parse_args(argv)
    home = options.home or Path(tempfile.mkdtemp(prefix="skewguard-burst-"))
    env = _setup(home)
    port = free_port()
    env |= {"SKEWGUARD_PORT": str(port), "SKEWGUARD_HEADER_TIMEOUT_SECONDS": "2"}
    log = (home / "burst-gateway.log").open("wb")
    skewguard = str(Path(sys.executable).with_name("skewguard"))
    server = subprocess.Popen([skewguard, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        from bench.gateway_servers import Server

        wait_ready(Server("gateway", server, home / "burst-gateway.log", front=True), f"{url}/readyz")
        bursts = _bursts(url, _rows(home, 256), options.requests, options.concurrency, options.rounds)
        alone, together = asyncio.run(bursts)
    finally:
        server.terminate()
        server.wait(timeout=30)
    _report(alone, together, options)
    print(describe_machine())
    return 0


def _report(alone: list[Burst], together: list[Burst], options: argparse.Namespace) -> None:
    print(
        f"{options.requests} requests per burst at c={options.concurrency}, {options.rounds} rounds of "
        "each (alternating), one `skewguard serve` process"
    )
    for label, bursts in (("valid alone", alone), ("mixed", together)):
        answers = [a for burst in bursts for a in burst.answers]
        counts = Counter(a.status for a in answers)
        errors = sum(1 for a in answers if (a.status or 0) >= 500)
        unexpected = sum(len(burst.unexpected()) for burst in bursts)
        p99s = ", ".join(f"{burst.p99_ms():.0f}" for burst in bursts)
        print(f"{label:<12} answers by status: {dict(sorted(counts.items(), key=str))}")
        print(f"{'':<12} unexpected: {unexpected}  5xx: {errors}  p99 of valid per round: {p99s} ms")
    p_alone = statistics.median(burst.p99_ms() for burst in alone)
    p_mixed = statistics.median(burst.p99_ms() for burst in together)
    print(f"p99 of the valid requests (median over rounds): alone {p_alone:.1f} ms, mixed {p_mixed:.1f} ms")
    print(f"ratio mixed/alone: {p_mixed / p_alone:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
