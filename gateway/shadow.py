"""Shadow work: a candidate runs a request the champion already answered, off the response path.

The champion's answer goes to the client first; the request's copy for the shadow goes into
a bounded queue (``submit`` never waits). At most ``concurrency`` worker tasks take the
copies oldest first and run the candidate's whole path — validation, online features (the
champion's read reused when both read the same features), its own skew guard, its models —
under the request budget. The champion's prediction-log records are then written with the
candidate's answer, latency and skew flags beside each row (same request id), or with the
candidate's error: a shadow that fails never reaches a client.

Under overload the shadow gives way first: it runs on spare capacity only, and a copy is
dropped (reason ``busy``) rather than run, before it takes any of the champion's time, when

- more than ``max_inflight`` champion requests are in flight in this process (``inflight``,
  counted by the app): requests are queueing for the event loop, which is what a gateway
  process saturates first — a sign that holds when the CPUs are shared with other processes,
  and the loop's own CPU time says little; or
- the event loop's thread was busy more than ``max_load`` of the last quarter second
  (``LoopLoad``: its CPU time over wall time), as with a few large requests.

A copy that finds the queue full, or that waited longer than ``max_wait_s``, is dropped too.
Every drop is counted (``skewguard_shadow_dropped_total{reason}``), and the champion's records
are written at once with the candidate marked ``dropped``. Each worker also yields to the
event loop before each copy, so champion requests that are ready run first. On shutdown
(``drain``) the runs in flight finish; copies still queued are dropped the same way, so every
answered request is logged exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from skewguard.errors import ConfigError, SkewguardError
from skewguard.gateway.cascades import LoadedCascade
from skewguard.gateway.metrics import GatewayMetrics
from skewguard.gateway.predict import Fetched, PredictOptions, predict
from skewguard.gateway.predlog import PredictionLog
from skewguard.gateway.records import candidate_answers, candidate_failure, with_candidate
from skewguard.predictionlog.records import PredictionRecord

logger = logging.getLogger(__name__)
VARIANT = "shadow"


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One answered request's copy for the shadow: the candidate, the body, the champion's records."""

    candidate: LoadedCascade
    body: Any
    records: list[PredictionRecord]
    fetched: Fetched | None = None
    """The champion's online-feature read, when the candidate reads the same features."""
    queued_at: float = 0.0
    """``time.monotonic()`` when it was queued (set by ``submit``)."""


class LoopLoad:
    """How busy the calling thread (the event loop's) is: its CPU time over wall time, per window.

    Read from the loop's thread only. The figure is the last complete window's (``window_s``),
    so a burst shows within a window and a single slow request does not.
    """

    def __init__(self, window_s: float = 0.25) -> None:
        self.window_s = window_s
        self._mark: tuple[float, float] | None = None
        self._load = 0.0

    def now(self) -> float:
        wall, cpu = time.perf_counter(), time.thread_time()
        if self._mark is None:
            self._mark = (wall, cpu)
        elif wall - self._mark[0] >= self.window_s:
            self._load = (cpu - self._mark[1]) / (wall - self._mark[0])
            self._mark = (wall, cpu)
        return self._load


class ShadowQueue:
    """The gateway's bounded shadow work (see the module doc). Use from the event loop's thread."""

    def __init__(
        self,
        log: PredictionLog,
        metrics: GatewayMetrics,
        options: PredictOptions,
        *,
        max_queue: int = 256,
        concurrency: int = 2,
        max_wait_s: float = 1.0,
        max_load: float = 0.8,
        max_inflight: int = 8,
    ) -> None:
        if max_queue < 1 or concurrency < 1 or not max_wait_s > 0 or not 0 < max_load <= 1:
            raise ConfigError(
                f"The shadow queue needs max_queue >= 1, concurrency >= 1, max_wait_s > 0 and "
                f"0 < max_load <= 1; got {max_queue}, {concurrency}, {max_wait_s} and {max_load}.",
                field="shadow",
            )
        self.log = log
        self.metrics = metrics
        self.options = options
        self.max_queue = max_queue
        self.concurrency = concurrency
        self.max_wait_s = max_wait_s
        self.max_load = max_load
        self.max_inflight = max_inflight
        """At most this many champion requests in flight for a copy to run; 0: any number."""
        self.inflight = 0
        """Champion requests being answered in this process now (the app counts them)."""
        self.load = LoopLoad()
        self._queue: deque[ShadowJob] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, job: ShadowJob) -> bool:
        """Queue the copy (True), or drop it and log the champion's records at once (False)."""
        reason = self._refusal()
        if reason is not None:
            self._drop(job, reason)
            return False
        self._queue.append(ShadowJob(job.candidate, job.body, job.records, job.fetched, time.monotonic()))
        if len(self._workers) < self.concurrency:
            worker = asyncio.get_running_loop().create_task(self._work(), name="shadow-worker")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return True

    def _refusal(self) -> str | None:
        if self._closing:
            return "shutdown"
        if len(self._queue) >= self.max_queue:
            return "queue_full"
        return "busy" if self._is_busy() else None

    def _is_busy(self) -> bool:
        if 0 < self.max_inflight < self.inflight:
            return True
        return self.max_load < 1 and self.load.now() > self.max_load

    async def drain(self, timeout: float = 5.0) -> None:
        """Let the runs in flight finish (at most ``timeout``); drop, and log, what is still queued."""
        self._closing = True
        while self._queue:
            self._drop(self._queue.popleft(), "shutdown")
        if self._workers:
            await asyncio.wait(list(self._workers), timeout=timeout)
        for worker in list(self._workers):
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _work(self) -> None:
        while self._queue:
            await asyncio.sleep(0)  # champion requests that are ready run first
            if not self._queue:
                return
            job = self._queue.popleft()
            if self._is_busy():  # the load rose while it waited
                self._drop(job, "busy")
            elif time.monotonic() - job.queued_at > self.max_wait_s:
                self._drop(job, "waited_too_long")
            else:
                try:
                    await self._run(job)
                except asyncio.CancelledError:  # drain gave up on it: still log the champion's answer
                    self._drop(job, "shutdown")
                    raise

    async def _run(self, job: ShadowJob) -> None:
        candidate, name = job.candidate, job.candidate.name
        started = time.perf_counter()
        try:
            outcome = await predict(candidate, job.body, self.options, fetched=job.fetched)
        except SkewguardError as exc:
            self._failed(job, exc.code, f"{exc.code}: {exc.message}", started)
            return
        except Exception as exc:
            logger.exception("shadow run of %s failed unexpectedly", candidate.manifest.tag)
            self._failed(job, "internal_error", f"internal_error: {exc!r}", started)
            return
        latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.child(self.metrics.shadow_runs, name, "ok").inc()
        self.metrics.child(self.metrics.variant_rows, name, VARIANT).inc(len(outcome.rows))
        self.log.submit(
            with_candidate(job.records, candidate_answers(candidate, outcome, VARIANT, latency_ms))
        )

    def _failed(self, job: ShadowJob, code: str, error: str, started: float) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.child(self.metrics.shadow_runs, job.candidate.name, code).inc()
        entry = candidate_failure(
            str(job.candidate.manifest.tag), VARIANT, error=error, latency_ms=latency_ms
        )
        self.log.submit(with_candidate(job.records, [entry] * len(job.records)))

    def _drop(self, job: ShadowJob, reason: str) -> None:
        self.metrics.child(self.metrics.shadow_dropped, job.candidate.name, reason).inc()
        entry = candidate_failure(str(job.candidate.manifest.tag), VARIANT)
        self.log.submit(with_candidate(job.records, [entry] * len(job.records)))
