"""Where one request's CPU goes: the gateway's stages, sampled in-process, without HTTP.

    .venv/bin/python bench/gateway_stages.py --home DIR [--cascade returns-text] [--requests 20000]

Over a trained home (``bench/gateway.py --home DIR`` leaves one), it builds the gateway app as
``skewguard serve`` does (Feast SQLite, the prediction log, the skew guard, co-located models)
and calls it directly as an ASGI app from ``--clients`` concurrent tasks, each sending the
benchmark's request bodies one after another. While they run, py-spy samples the event
loop's thread (1,000 samples a second, from outside the process: nothing in the request path
is wrapped); each sample counts for the innermost stage on its stack:

    parse     the body read and parsed, rows checked          features  the online read and merge
    encode    rows to model inputs                             guard     the skew guard's checks
    models    the router's and branches' graphs (onnxruntime) answer    the answer rows and JSON
    log       the prediction-log records and the submit        metrics   the Prometheus updates
    gather    queueing rows and lookups for a batch            request   the app around the stages
    asyncio   the event loop's own work                        other     the rest

Shares of the samples times the loop thread's CPU per request give µs per stage. The Feast
reads and the log's writes run in threads of their own: their CPU is ``threads``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/gateway_stages.py`: bench (and the example) from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    import bench  # noqa: F401 - puts the returns example's modules on the path

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

STAGES: dict[str, tuple[str, ...]] = {
    "parse": ("read_json (skewguard/gateway/app.py", "parse_rows (skewguard/gateway/predict.py"),
    "features": ("_fetch (skewguard/gateway/predict.py", "_merge (skewguard/gateway/predict.py"),
    "encode": ("encode_request (skewguard/gateway/decoding.py", "stack (skewguard/bentos/inputs.py"),
    "guard": ("check (skewguard/gateway/guard.py",),
    "models": ("predict_batch (skewguard/bentos/runner.py",),
    "answer": ("_answer (skewguard/gateway/predict.py", "json_response (skewguard/gateway/app.py"),
    "log": ("to_records (skewguard/gateway/records.py", "submit (skewguard/gateway/predlog.py"),
    "metrics": ("_observe (skewguard/gateway/app.py",),
    "gather": ("(skewguard/gateway/batching.py", "(skewguard/gateway/features.py"),
    "request": ("(skewguard/gateway/app.py", "(skewguard/gateway/predict.py"),
    "asyncio": ("(asyncio/", "(uvloop/"),
}
"""Stage → frames (py-spy's ``function (file`` text) that put a sample in it; the innermost wins."""


def stage_of(stack: Sequence[str]) -> str:
    """The stage of one sampled stack (outermost frame first): its innermost stage frame's."""
    for frame in reversed(stack):
        for stage, marks in STAGES.items():
            if any(mark in frame for mark in marks):
                return stage
    return "other"


def sample(pid: int, thread: int, seconds_file: Path, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid``'s threads as raw (folded) stacks until stopped."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "--pid", str(pid), "--rate", "1000", "--format", "raw", "--threads"]
    command += ["--nonblocking", "--output", str(out), "--duration", seconds_file.read_text().strip()]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_samples(raw: Path, thread: int) -> Counter[str]:
    """Samples per stage of the event loop's thread, from py-spy's raw output."""
    found: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")  # the first names the thread: "thread (<native id>): <name>"
        if count.isdigit() and frames[0].startswith(f"thread ({thread})"):
            found[stage_of(frames[1:])] += int(count)
    return found


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

    bodies = [line.encode() for line in bodies_file.read_text().splitlines() if line]
    path = f"/v1/cascades/{cascade}/predict"
    folder = Path(tempfile.mkdtemp(prefix="skewguard-stages-"))

    async def scenario() -> tuple[int, float, float, float]:
        app = create_app(build_gateway(GatewaySettings.from_env()))
        async with LifespanManager(app) as manager:
            await drive(manager.app, path, bodies, clients, warmup)
            started = time.perf_counter()
            await drive(manager.app, path, bodies, clients, min(requests, 2_000))  # how long a run takes
            seconds = (time.perf_counter() - started) * requests / min(requests, 2_000)
            (folder / "seconds").write_text(str(max(2, round(seconds * 1.5))))
            spy = sample(os.getpid(), threading.get_native_id(), folder / "seconds", folder / "raw.txt")
            await asyncio.sleep(1.0)  # py-spy attaches
            loop_started, process_started, wall = time.thread_time(), time.process_time(), time.perf_counter()
            ok = await drive(manager.app, path, bodies, clients, requests)
            loop_cpu, process_cpu = time.thread_time() - loop_started, time.process_time() - process_started
            wall = time.perf_counter() - wall
            spy.wait(timeout=seconds * 3 + 30)
        return ok, loop_cpu, process_cpu, requests / wall

    ok, loop_cpu, process_cpu, rate = _run_loop(scenario())
    samples = read_samples(folder / "raw.txt", threading.get_native_id())
    return report(samples, ok, requests, loop_cpu, process_cpu, rate, clients, cascade)


def _run_loop(coroutine: Any) -> Any:
    """Run on uvloop when it is installed, as uvicorn does (its ``loop="auto"``), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def report(
    samples: Counter[str],
    ok: int,
    requests: int,
    loop_cpu: float,
    process_cpu: float,
    rate: float,
    clients: int,
    cascade: str,
) -> list[str]:
    total = sum(samples.values()) or 1
    loop_us = loop_cpu * 1e6 / requests
    per = {name: loop_us * samples[name] / total for name in (*STAGES, "other")}
    machine = platform.processor() or platform.machine()
    lines = [
        f"gateway stages, in-process: {requests:,} requests ({ok:,} answered 200) from {clients} tasks "
        f"on `{cascade}`; {total:,} samples of the event loop's thread",
        f"machine: {machine}, {os.cpu_count()} CPUs · python {platform.python_version()}",
        f"event loop thread: {loop_us:,.1f} µs of CPU per request; whole process "
        f"{process_cpu * 1e6 / requests:,.1f} µs; {rate:,.0f} req/s in-process",
        "",
        f"{'stage':<10}{'µs/request':>12}{'share':>8}",
        *(f"{name:<10}{value:>12.1f}{value / loop_us:>8.0%}" for name, value in per.items()),
        f"{'threads':<10}{(process_cpu - loop_cpu) * 1e6 / requests:>12.1f}   (Feast, the log's writer)",
        "STAGES-RESULT " + json.dumps({"per_request_us": per, "loop_us": loop_us, "rate": rate}),
    ]
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
