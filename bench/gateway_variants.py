"""The gateway benchmark's variants: the servers each one starts, the URL and bodies it is driven with.

Variant (1) is measured twice, each time in its own gateway process serving one cascade of
three models: ``1`` with image requests on the demo cascade, ``1t`` with tabular+text
requests (the same orders without the photo) on a cascade trained with ``--no-image``;
``1w`` is ``1t`` served by two gateway workers (``SKEWGUARD_WORKERS=2``); and ``1s`` is ``1``
with a shadow attached at fraction 1.0 (``skewguard cascade shadow``), detached afterwards.
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gateway_report import Cell, ImageCost
from bench.gateway_servers import Server, free_port, get_text, post_json, start, wait_ready

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CASCADE = "returns"
TEXT_CASCADE = "returns-text"  # bench.gateway.text_cascade_file: the returns cascade without the photo
N_CHECKED = 16
WORKERS = 2
"""Gateway processes of ``1w`` (two: one per CPU of a 2-vCPU machine)."""
TEXT_KEYS = ("1t", "1w")
GATEWAY_KEYS = ("1", *TEXT_KEYS, "1s", "2")


@dataclass(frozen=True, slots=True)
class Setup:
    """The prepared state every variant serves from."""

    home: Path
    env: dict[str, str]
    build: dict[str, Any]
    pipelines: Path
    pipelines_source: str
    bodies: Path
    body_bytes: float
    text_bodies: Path
    text_body_bytes: float
    image: ImageCost
    shadow: str | None = None
    """A second version of the image cascade, the shadow of ``1s``."""


def bodies_of(key: str, setup: Setup) -> Path:
    """The request bodies variant ``key`` is driven with: without the image for ``0``, ``1t`` and ``1w``."""
    return setup.text_bodies if key in (*TEXT_KEYS, "0") else setup.bodies


def launch(key: str, setup: Setup, servers: list[Server]) -> str:
    """Start variant ``key``'s servers into ``servers`` (so a failure still stops them); return its URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if key == "0":
        command = [sys.executable, "-O", str(BENCH / "gateway_bare.py"), "--port", str(port)]
        servers.append(start("bare", command, setup.env, setup.home, front=True))
        wait_ready(servers[-1], f"{base}/readyz")
        return f"{base}/v1/cascades/{TEXT_CASCADE}/predict"
    if key in GATEWAY_KEYS:
        cascade = TEXT_CASCADE if key in TEXT_KEYS else CASCADE
        remote = launch_bentos(setup, servers) if key == "2" else {}
        env = setup.env | {
            "SKEWGUARD_PORT": str(port),
            "SKEWGUARD_CASCADES": cascade,  # one cascade, three models, per gateway process
            "SKEWGUARD_WATCH_SECONDS": "60" if key == "1w" else "0",  # workers follow reloads by it
            "SKEWGUARD_REMOTE_MODELS": json.dumps(remote),
            "SKEWGUARD_WORKERS": str(WORKERS if key == "1w" else 1),
        }
        servers.append(start("gateway", [str(BIN / "skewguard"), "serve"], env, setup.home, front=True))
        wait_ready(servers[-1], f"{base}/readyz")
        return f"{base}/v1/cascades/{cascade}/predict"
    if key == "3":
        models = setup.build["models"]
        tags = {f"SKEWGUARD_BENCH_{role.upper()}": model["tag"] for role, model in models.items()}
        serve = [sys.executable, "-m", "bentoml", "serve", "gateway_bentoml:CascadeService"]
        command = [*serve, "--working-dir", str(BENCH), "--host", "127.0.0.1", "--port", str(port)]
        servers.append(start("bentoml", command, setup.env | tags, setup.home, front=True))
        wait_ready(servers[-1], f"{base}/readyz")
        return f"{base}/predict"
    naive = [sys.executable, str(BENCH / "gateway_naive.py"), "serve", "--pipelines", str(setup.pipelines)]
    servers.append(start("naive", [*naive, "--port", str(port)], setup.env, setup.home, front=True))
    wait_ready(servers[-1], f"{base}/healthz")
    return f"{base}/v1/cascades/{CASCADE}/predict"


def launch_bentos(setup: Setup, servers: list[Server]) -> dict[str, str]:
    """Variant (2)'s model services, each Bento under ``bentoml serve``; {model name: URL}."""
    urls = {}
    for role, model in setup.build["models"].items():
        port = free_port()
        command = [sys.executable, "-m", "bentoml", "serve", model["bento"], "--host", "127.0.0.1"]
        servers.append(start(role, [*command, "--port", str(port)], setup.env, setup.home, front=False))
        urls[model["name"]] = f"http://127.0.0.1:{port}"
    for server, url in zip(servers[-len(urls) :], urls.values(), strict=True):
        wait_ready(server, f"{url}/readyz")
    return urls


def check_answers(url: str, bodies: Path) -> tuple[list[float], int]:
    """P(returned) of the first rows, one request at a time, and how many attempts failed.

    Every variant but ``1t`` serves the same models, so their answers must agree; a row is
    tried three times before the variant counts as failed.
    """
    p1, failed = [], 0
    for line in bodies.read_text().splitlines()[:N_CHECKED]:
        for attempt in range(3):
            try:
                (prediction,) = post_json(url, line.encode())["predictions"]
                break
            except urllib.error.HTTPError:
                failed += 1
                if attempt == 2:
                    raise
        p1.append(float(prediction["probabilities"]["1"]))
    return p1, failed


def settle(url: str, bodies: Path) -> None:
    """Wait until the server has answered what the last load left queued: one request, answered.

    A server that blocks its event loop (4) keeps working through the requests of closed
    connections; without this, a short cell would start behind that backlog.
    """
    with contextlib.suppress(urllib.error.HTTPError):
        post_json(url, bodies.read_text().splitlines()[0].encode(), timeout=120)


def to_cell(
    key: str, concurrency: int, result: dict[str, Any], servers: Sequence[Server], unique: int | None
) -> Cell:
    """The cell of one load run; ``unique``: bytes of the front tree's distinct pages after it."""
    statuses = {int(status): n for status, n in result["statuses"].items()}
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return Cell(
        variant=key,
        concurrency=concurrency,
        ok_rps=ok / result["duration_s"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=result["requests"] - ok + result["socket_errors"] + result["timeouts"],
        errors_5xx=sum(n for status, n in statuses.items() if status >= 500),
        rss_front_mb=sum(s.peak_rss for s in servers if s.front) / 2**20,
        rss_all_mb=sum(s.peak_rss for s in servers) / 2**20,
        unique_front_mb=None if unique is None else unique / 2**20,
    )


def log_stats(url: str) -> str:
    """The gateway's prediction-log figures after the load (dropped, queued), from /metrics."""
    prefix = "skewguard_prediction_log_"
    text = get_text(url.split("/v1/")[0] + "/metrics")
    samples = [line.removeprefix(prefix).split() for line in text.splitlines() if line.startswith(prefix)]
    return (
        ", ".join(f"{name.removesuffix('_total')} {float(value):,.0f}" for name, value, *_ in samples)
        or "n/a"
    )


def shadow_stats(url: str) -> str:
    """How many shadow copies ran and were dropped during the load, from /metrics."""
    text = get_text(url.split("/v1/")[0] + "/metrics")
    totals = {"ran": 0.0, "failed": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        if line.startswith("skewguard_shadow_runs_total{"):
            totals["ran" if 'outcome="ok"' in line else "failed"] += float(line.split()[-1])
        elif line.startswith("skewguard_shadow_dropped_total{"):
            totals["dropped"] += float(line.split()[-1])
    return ", ".join(f"{name} {value:,.0f}" for name, value in totals.items())


def served_cascade(url: str) -> str:
    """The cascade version and model tags the gateway at ``url`` serves, from ``GET /v1/cascades``."""
    listed = json.loads(get_text(url.split("/v1/")[0] + "/v1/cascades"))["cascades"]
    return "; ".join(
        f"{c['version']}: " + ", ".join(f"{role} {tag}" for role, tag in c["models"].items()) for c in listed
    )
