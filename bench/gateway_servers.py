"""Server subprocesses of the gateway benchmark: start, wait until ready, measure memory, stop.

Each server runs in its own session, so stopping it signals its whole process tree (a
``bentoml serve`` arbiter and its workers) and nothing else. RSS comes from /proc: the sum
over a process and all its descendants, sampled while the load runs (pages shared between
forked workers count in each, as ``ps`` would show them), and PSS, which counts each
shared page once, divided among the processes that map it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0


@dataclass(slots=True)
class Server:
    """A server subprocess; ``front`` marks the one clients talk to (the others serve it)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    front: bool
    started: float = 0.0
    """``time.monotonic()`` just before the process was started."""
    ready_s: float | None = None
    """Seconds from ``started`` to the first 200 of its readiness URL (``wait_ready``)."""
    peak_rss: int = 0
    peak_pss: int = 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(name: str, command: Sequence[str], env: dict[str, str], home: Path, *, front: bool) -> Server:
    """Start ``command`` in ``home``, its output in ``home/server-<name>.log``."""
    log = home / f"server-{name}.log"
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=home, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name, process, log, front, started)


def wait_ready(server: Server, url: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Return once ``url`` answers 200; raise with the log's tail if the server exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.process.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                server.ready_s = time.monotonic() - server.started
                return
        time.sleep(0.05)
    tail = server.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{server.name} did not become ready at {url}:\n{tail}")


def stop(servers: Sequence[Server]) -> None:
    """SIGTERM each server's process group (the gateway drains its log), SIGKILL it after 20 s."""
    for server in servers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
    for server in servers:
        try:
            server.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def tree_rss(pid: int) -> int:
    """Bytes of RSS of ``pid`` and all its descendants (from statm: cheap to sample often)."""
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for current in tree_pids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * page
    return total


def tree_memory(pid: int) -> tuple[int, int]:
    """Bytes of RSS and of PSS of ``pid`` and all its descendants.

    RSS counts a page each process maps, so pages a pre-fork master shares with its workers
    count once per process; PSS divides each page among the processes that map it.
    """
    rss = pss = 0
    for current in tree_pids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("Rss", "Pss"):
                    kib = int(value.split()[0]) * 1024
                    rss, pss = (rss + kib, pss) if name == "Rss" else (rss, pss + kib)
    return rss, pss


@contextlib.contextmanager
def sampling_rss(servers: Sequence[Server], every: float = 0.5) -> Iterator[None]:
    """Record each server tree's peak RSS and PSS (``peak_rss``, ``peak_pss``) while the block runs."""
    halt = threading.Event()

    def sample() -> None:
        while True:
            for server in servers:
                rss, pss = tree_memory(server.process.pid)
                server.peak_rss, server.peak_pss = max(server.peak_rss, rss), max(server.peak_pss, pss)
            if halt.wait(every):
                return

    for server in servers:
        server.peak_rss = server.peak_pss = 0
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        halt.set()
        sampler.join()


def get_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text: str = response.read().decode()
        return text


def post_json(url: str, body: bytes, timeout: float = 30.0) -> dict[str, Any]:
    request = urllib.request.Request(url, body, {"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer
