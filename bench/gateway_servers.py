"""Server subprocesses of the gateway benchmark: start, wait until ready, measure memory, stop.

Each server runs in its own session, so stopping it signals its whole process tree (a
``bentoml serve`` arbiter and its workers) and nothing else. RSS comes from /proc: the sum
over a process and all its descendants, sampled while the load runs (pages shared between
forked workers count in each, as ``ps`` would show them); ``tree_unique`` counts each
physical page of the tree once.
"""

from __future__ import annotations

import array
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


def tree_unique(pid: int) -> int | None:
    """Bytes of the distinct physical pages resident in ``pid`` and all its descendants.

    Pages a pre-fork master shares with its workers count once, and so do the library pages
    the tree shares with other processes (PSS would divide those with, say, this benchmark's
    own Python). Read from /proc/<pid>/pagemap, whose page frame numbers only root sees:
    None otherwise. Costs ~0.3 s of CPU for a gateway and two workers, so it is read once
    per cell, after the load.
    """
    frames: set[int] = set()
    page, present, frame = os.sysconf("SC_PAGE_SIZE"), 1 << 63, (1 << 55) - 1
    for current in tree_pids(pid):
        with (
            contextlib.suppress(OSError),
            open(f"/proc/{current}/maps") as maps,
            open(f"/proc/{current}/pagemap", "rb") as pagemap,
        ):
            for line in maps:
                if line.rstrip().endswith("[vsyscall]"):  # outside the process's address space
                    continue
                start, end = (int(x, 16) for x in line.split(maxsplit=1)[0].split("-"))
                pagemap.seek(start // page * 8)
                entries = array.array("Q", pagemap.read((end - start) // page * 8))
                frames.update(e & frame for e in entries if e & present)
    if frames == {0}:  # not root: every frame number reads 0
        return None
    return len(frames) * page


@contextlib.contextmanager
def sampling_rss(servers: Sequence[Server], every: float = 0.5) -> Iterator[None]:
    """Record each server tree's peak RSS (``peak_rss``) while the block runs."""
    halt = threading.Event()

    def sample() -> None:
        while True:
            for server in servers:
                server.peak_rss = max(server.peak_rss, tree_rss(server.process.pid))
            if halt.wait(every):
                return

    for server in servers:
        server.peak_rss = 0
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
