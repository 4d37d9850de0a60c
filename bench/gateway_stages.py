"""Where one request's CPU goes: the gateway's stages timed in-process, without HTTP.

    .venv/bin/python bench/gateway_stages.py --home DIR [--cascade returns-text] [--requests 20000]

Over a trained home (``bench/gateway.py --home DIR`` leaves one), it builds the gateway app as
``skewguard serve`` does (Feast SQLite, the prediction log, the skew guard, co-located models)
and calls it directly as an ASGI app from ``--clients`` concurrent tasks, each sending the
benchmark's request bodies one after another. Each stage's functions are wrapped with a
timer of the calling thread's CPU time (nested stages are subtracted from the outer one), so
the table says how many µs of CPU each stage costs per request:

    parse     the body read and parsed, rows checked          features  the online read and merge
    encode    rows to model inputs                             guard     the skew guard's checks
    models    the router's and branches' graphs (onnxruntime) answer    the answer rows and JSON
    log       the prediction-log records and the submit        metrics   the Prometheus updates
    other     the rest of the request (the app, the gathering, asyncio)

The Feast reads and the log's writes run in threads of their own; their CPU is in
``threads`` (the process's CPU beyond the event loop's), not in a stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/gateway_stages.py`: bench (and the example) from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    import bench  # noqa: F401 - puts the returns example's modules on the path

import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

STAGES: dict[str, tuple[str, ...]] = {
    "parse": ("skewguard.gateway.app:read_json", "skewguard.gateway.predict:parse_rows"),
    "features": ("skewguard.gateway.predict:_fetch", "skewguard.gateway.predict:_merge"),
    "encode": ("skewguard.gateway.predict:encode_request",),
    "guard": ("skewguard.gateway.guard:SkewGuard.check",),
    "models": ("skewguard.bentos.runner:OnnxRunner.predict_batch",),
    "answer": ("skewguard.gateway.predict:_answer", "skewguard.gateway.app:json_response"),
    "log": ("skewguard.gateway.app:to_records", "skewguard.gateway.predlog:PredictionLog.submit"),
    "metrics": ("skewguard.gateway.app:_observe",),
}
"""Stage → the functions whose own CPU time (less the nested stages') it counts."""


class StageClock:
    """Thread-CPU time per stage, with nesting: an inner stage's time is not its caller's too."""

    def __init__(self) -> None:
        self.spent: dict[str, int] = defaultdict(int)
        self._stack: list[list[int]] = []  # per open stage: [started, nested]

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.thread_time_ns()
        self._stack.append([started, 0])
        try:
            yield
        finally:
            _, nested = self._stack.pop()
            took = time.thread_time_ns() - started
            self.spent[name] += took - nested
            if self._stack:
                self._stack[-1][1] += took

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        if asyncio.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                # Only the synchronous stretches count: the coroutine's own steps, not the waits.
                with self.stage(name):
                    coroutine = function(*args, **kwargs)
                return await _timed_steps(self, name, coroutine)

            return timed_async

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return timed


async def _timed_steps(clock: StageClock, name: str, coroutine: Any) -> Any:
    """Drive ``coroutine`` step by step, timing each step (the time it awaits others is not its own)."""
    sent: Any = None
    error: BaseException | None = None
    while True:
        try:
            with clock.stage(name):
                step = coroutine.throw(error) if error is not None else coroutine.send(sent)
        except StopIteration as done:
            return done.value
        error = None
        try:
            sent = await _Awaitable(step)
        except BaseException as exc:  # noqa: BLE001 - handed back into the coroutine
            error = exc


class _Awaitable:
    """What a coroutine step yielded (a future), awaited on its behalf."""

    def __init__(self, step: Any) -> None:
        self.step = step

    def __await__(self) -> Any:
        return (yield self.step)


def instrument(clock: StageClock) -> None:
    """Replace each stage's functions by timed ones, where they are looked up at call time."""
    for stage, targets in STAGES.items():
        for target in targets:
            module_name, _, attribute = target.partition(":")
            module = importlib.import_module(module_name)
            owner: Any = module
            *path, leaf = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, leaf, clock.wrap(stage, getattr(owner, leaf)))


async def drive(app: Any, path: str, bodies: Sequence[bytes], clients: int, requests: int) -> int:
    """``requests`` POSTs to ``path`` from ``clients`` tasks; the number answered 200."""
    ok = 0
    counter = iter(range(requests))

    async def client() -> None:
        nonlocal ok
        for i in counter:
            status = await _post(app, path, bodies[i % len(bodies)])
            ok += status == 200

    await asyncio.gather(*(client() for _ in range(clients)))
    return ok


async def _post(app: Any, path: str, body: bytes) -> int:
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return status


def run(home: Path, cascade: str, bodies_file: Path, clients: int, requests: int, warmup: int) -> list[str]:
    os.environ.update({"SKEWGUARD_HOME": str(home), "BENTOML_HOME": str(home / "bentoml")})
    os.environ.update({"SKEWGUARD_CASCADES": cascade, "SKEWGUARD_WATCH_SECONDS": "0"})
    from asgi_lifespan import LifespanManager

    from skewguard.gateway.app import create_app
    from skewguard.gateway.server import build_gateway
    from skewguard.gateway.settings import GatewaySettings

    clock = StageClock()
    instrument(clock)
    bodies = [line.encode() for line in bodies_file.read_text().splitlines() if line]
    path = f"/v1/cascades/{cascade}/predict"

    async def scenario() -> tuple[int, float, float, int]:
        app = create_app(build_gateway(GatewaySettings.from_env()))
        async with LifespanManager(app) as manager:
            await drive(manager.app, path, bodies, clients, warmup)
            clock.spent.clear()
            loop_started, process_started, wall = time.thread_time(), time.process_time(), time.perf_counter()
            ok = await drive(manager.app, path, bodies, clients, requests)
            loop_cpu = time.thread_time() - loop_started
            process_cpu = time.process_time() - process_started
            wall = time.perf_counter() - wall
        return ok, loop_cpu, process_cpu, round(requests / wall)

    ok, loop_cpu, process_cpu, rate = asyncio.run(scenario())
    return report(clock.spent, ok, requests, loop_cpu, process_cpu, rate, clients, cascade)


def report(
    spent: dict[str, int],
    ok: int,
    requests: int,
    loop_cpu: float,
    process_cpu: float,
    rate: int,
    clients: int,
    cascade: str,
) -> list[str]:
    per = {name: ns / 1e3 / requests for name, ns in spent.items()}
    loop_us = loop_cpu * 1e6 / requests
    machine = platform.processor() or platform.machine()
    lines = [
        f"gateway stages, in-process: {requests:,} requests ({ok:,} answered 200) from {clients} tasks "
        f"on `{cascade}`",
        f"machine: {machine}, {os.cpu_count()} CPUs · python {platform.python_version()}",
        f"event loop thread: {loop_us:,.1f} µs of CPU per request; whole process "
        f"{process_cpu * 1e6 / requests:,.1f} µs; {rate:,} req/s in-process",
        "",
        f"{'stage':<10}{'µs/request':>12}{'share':>8}",
    ]
    for name in (*STAGES, "other"):
        value = per.get(name, 0.0) if name != "other" else loop_us - sum(per.values())
        lines.append(f"{name:<10}{value:>12.1f}{value / loop_us:>8.0%}")
    lines.append(
        f"{'threads':<10}{(process_cpu - loop_cpu) * 1e6 / requests:>12.1f}   (Feast reads, the log's writes)"
    )
    lines.append("STAGES-RESULT " + json.dumps({"per_request_us": per, "loop_us": loop_us, "rate": rate}))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", type=Path, required=True, help="a home `bench/gateway.py --home` trained")
    parser.add_argument("--cascade", default="returns-text")
    parser.add_argument("--bodies", type=Path, help="default: <home>/bodies-text.jsonl (or bodies.jsonl)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    args = parser.parse_args(argv)
    bodies = args.bodies or args.home / (
        "bodies-text.jsonl" if args.cascade.endswith("-text") else "bodies.jsonl"
    )
    for line in run(args.home, args.cascade, bodies, args.clients, args.requests, args.warmup):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
