"""The gateway benchmark's load generator: wrk (Debian's package) or, without it, async httpx.

    python bench/gateway_load.py --url URL --bodies FILE --concurrency C --seconds S [--tool auto]

Run as its own process, never inside a server's: it POSTs the JSON bodies of FILE (one per
line, round-robin) over C keep-alive connections for S seconds and prints one line,
``LOAD-RESULT {json}``: the tool, completed responses by status, socket errors and
timeouts, p50/p99 latency in ms and the measured duration.

wrk runs 2 threads (the machine's cores) and counts statuses in its Lua ``response``
hook. The httpx fallback is one asyncio process, one client per worker; it spends far
more CPU per request than wrk (it topped out near 1,000 req/s on a 2-CPU machine where
wrk drove the same server to 1,300+), so its figures are a lower bound on the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

MARKER = "LOAD-RESULT "
TIMEOUT_S = 5
WRK_THREADS = 2
WRK_SCRIPT = """
local bodies_file = os.getenv("SKEWGUARD_BENCH_BODIES")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("offset", #threads * 7)
end

function init(args)
  statuses = {}
  prepared = {}
  for line in io.lines(bodies_file) do
    prepared[#prepared + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, line)
  end
  index = offset % #prepared
end

function request()
  index = index % #prepared + 1
  return prepared[index]
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    parts[#parts + 1] = string.format('"%s": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'LOAD-RESULT {"requests": %d, "duration_s": %.6f, "p50_ms": %.4f, "p99_ms": %.4f, ' ..
    '"socket_errors": %d, "timeouts": %d, "statuses": {%s}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.connect + e.read + e.write, e.timeout, table.concat(parts, ", ")))
end
"""


def choose_tool(requested: str) -> str:
    """``wrk`` when asked for or found on PATH (for ``auto``), else ``httpx``."""
    if requested == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk); use --tool httpx.")
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "httpx"
    return requested


def describe_tool(tool: str) -> str:
    """The load generator and its version, for the report."""
    if tool == "wrk":
        banner = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        words = (banner.stdout + banner.stderr).split()
        version = words[1] if len(words) > 1 else "?"
        return f"wrk {version} (Debian package), {WRK_THREADS} threads, keep-alive, Lua status counts"
    return f"async httpx {metadata.version('httpx')} (one asyncio process; the fallback when wrk is absent)"


def run_wrk(url: str, bodies: Path, concurrency: int, seconds: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        command = [
            "wrk",
            f"-t{min(WRK_THREADS, concurrency)}",
            f"-c{concurrency}",
            f"-d{seconds}s",
            f"--timeout={TIMEOUT_S}s",
            "-s",
            script.name,
            url,
        ]
        env = {**os.environ, "SKEWGUARD_BENCH_BODIES": str(bodies)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    finally:
        os.unlink(script.name)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            result: dict[str, Any] = json.loads(line[len(MARKER) :])
            return result
    raise SystemExit(f"wrk printed no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


async def run_httpx(url: str, bodies: Sequence[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    headers = {"content-type": "application/json"}
    # One client (one connection) per worker: a shared pool scans all its connections on
    # every request, which made the generator itself the bottleneck at c=64.
    clients = [
        httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=TIMEOUT_S)
        for _ in range(concurrency)
    ]
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, offset: int) -> None:
        i = offset
        async with client:
            while time.perf_counter() < deadline:
                body = bodies[i % len(bodies)]
                i += 1
                begin = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.TimeoutException:
                    failures["timeouts"] += 1
                    continue
                except httpx.TransportError:
                    failures["socket_errors"] += 1
                    continue
                latencies.append(time.perf_counter() - begin)
                statuses[str(response.status_code)] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(client, 7 * k) for k, client in enumerate(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "p50_ms": 1e3 * ordered[int(0.50 * (len(ordered) - 1))],
        "p99_ms": 1e3 * ordered[int(0.99 * (len(ordered) - 1))],
        "socket_errors": failures["socket_errors"],
        "timeouts": failures["timeouts"],
        "statuses": dict(statuses),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="one JSON body per line")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--seconds", type=int, required=True, help="whole seconds (wrk's unit)")
    parser.add_argument("--tool", choices=("auto", "wrk", "httpx"), default="auto")
    args = parser.parse_args(argv)
    tool = choose_tool(args.tool)
    if tool == "wrk":
        result = run_wrk(args.url, args.bodies, args.concurrency, args.seconds)
    else:
        bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line]
        result = asyncio.run(run_httpx(args.url, bodies, args.concurrency, args.seconds))
    result["tool"] = describe_tool(tool)
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
