"""Several gateway processes on one port: gunicorn's pre-fork master over uvicorn workers.

One gateway process is bound by its event loop's thread (the GIL): under load it uses one
core and leaves the others mostly idle. With ``SKEWGUARD_WORKERS=N`` gunicorn imports the
app once (``preload_app``), forks N workers that share those pages, and each runs the usual
lifespan — its own ONNX sessions, Feast reader, prediction-log writer and watcher — on a
listening socket of its own bound with SO_REUSEPORT, so the kernel spreads connections over
the workers (on one shared socket the first worker awake accepted a burst of keep-alive
clients alone). Before forking, the master also imports what opening the Feast store
imports, loads each champion once and lets it go (onnxruntime's set-up), freezes its heap
out of the garbage collector's view and returns its freed heap pages to the system
(``Gateway.preload``, ``GatewayProcesses.load``), so the workers keep sharing those pages
instead of each copying them (the memory this saves, step by step: docs/benchmarks.md).
gunicorn restarts a worker that dies, and on SIGTERM stops each gracefully (the prediction
log drains).

What the workers share: the metrics, through prometheus_client's multiprocess files in a
fresh directory per run; an admin reload, which reaches one worker and is announced to the
others in a marker file their watchers follow; the prediction log (SQLite in WAL mode with
a busy timeout, or PostgreSQL) and the model store.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from prometheus_client import multiprocess, values
from uvicorn_worker import UvicornWorker

from skewguard.gateway.protocol import http_protocol
from skewguard.gateway.settings import GatewaySettings

GRACEFUL_SECONDS = 10


class GatewayWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn under gunicorn, with the lifespan on and a bounded graceful shutdown.

    ``gateway_worker(settings)`` adds the HTTP protocol with the settings' limits on a request's
    head (``gateway.protocol``), as one process has them.
    """

    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 - the base class's contract
        "loop": "auto",
        "http": "auto",
        "lifespan": "on",
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
        "proxy_headers": False,  # as in one process (gateway.server.serve)
    }


def gateway_worker(settings: GatewaySettings) -> type[GatewayWorker]:
    """The worker class whose HTTP protocol has the settings' limits on a request's head."""
    protocol = http_protocol(settings.max_header_bytes, settings.header_timeout_seconds)
    kwargs = {**GatewayWorker.CONFIG_KWARGS, "http": protocol}
    return type("ConfiguredGatewayWorker", (GatewayWorker,), {"CONFIG_KWARGS": kwargs})


def enable_multiprocess_metrics() -> Path:
    """A fresh directory for the workers' metric files; prometheus_client switched to it.

    Call before any metric is created: prometheus_client picks the value class of a metric
    when it is constructed, from ``PROMETHEUS_MULTIPROC_DIR``.
    """
    folder = Path(tempfile.mkdtemp(prefix="skewguard-metrics-"))
    atexit.register(_remove_if_owner, folder, os.getpid())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return folder


def _remove_if_owner(folder: Path, owner: int) -> None:
    """Remove the shared folder when the master exits; forked workers inherit the hook, and skip it."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


class GatewayProcesses(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from the gateway's settings; ``load`` builds the app (once, preloaded)."""

    def __init__(self, settings: GatewaySettings, load_app: Callable[[], Any], metrics_dir: Path) -> None:
        self._settings = settings
        self._load_app = load_app
        self._metrics_dir = metrics_dir
        super().__init__()

    def load_config(self) -> None:
        settings = self._settings
        metrics_dir = str(self._metrics_dir)
        for key, value in {
            "bind": [f"{settings.host}:{settings.port}"],
            "workers": settings.workers,
            "worker_class": gateway_worker(settings),
            "preload_app": True,
            "reuse_port": True,  # a socket per worker: the kernel spreads new connections over them
            "graceful_timeout": GRACEFUL_SECONDS + 5,
            "timeout": 60,
            "keepalive": 5,
            "loglevel": "warning",
            "accesslog": None,
            "control_socket_disable": True,
            "child_exit": lambda server, worker: multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                worker.pid, metrics_dir
            ),
        }.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """The app, built in the master; then its objects frozen out of the garbage collector's view.

        A worker's first full collection would otherwise write to the header of every object
        it inherited, copying each page that holds one (copy-on-write) into the worker.
        """
        app = self._load_app()
        gc.collect()
        gc.freeze()
        _trim_heap()
        return app


def _trim_heap() -> None:
    """Hand the heap's free pages back to the system before forking (glibc's ``malloc_trim``).

    What the preload let go of (the champions it loaded once) stays resident in the freed
    parts of the C heap otherwise, and every worker inherits it: trimmed, the master keeps a
    few MB fewer pages of its own. Without glibc, nothing happens.
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the symbols this process has loaded
    if trim is not None:
        trim(0)
