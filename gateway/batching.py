"""Running a cascade: the router, then each row's specialist, for the rows of concurrent requests at once.

Model calls cost mostly per call, not per row: a run of sixteen rows costs a few times a
single row's, not sixteen times, and a call to a remote BentoML service pays its HTTP round
trip whatever it carries (figures: docs/benchmarks.md). So ``GatheredCascade`` runs the
rows of requests that arrive together as one batch: each request queues its validated values;
one drainer task takes everything queued (up to ``max_rows``), builds the model inputs once
for all of it (one array per field, not one per request and another to join them), has the
skew guard flag the rows once and the cascade answer them in one go, and hands each request
its own rows back. There is no batching window: a lone request runs at
once, and requests arriving while a run is in flight go in the next one. Each request waits
at most until its own deadline (then ``UpstreamTimeoutError``, a 504; one timer, set for the
earliest deadline of the requests waiting, watches them all); a failed run fails the
requests in it.

What answers a gathered batch:

- ``LocalCascade`` (co-located, the default): the router once over the batch and each
  branch's model once over its rows. A batch of up to ``INLINE_ROWS`` rows runs on the event loop
  itself; a larger one in a dedicated worker thread, so one big request never holds the loop
  for long. Handing small batches to the thread cost more than it saved: the thread needs the
  GIL back after each graph while the loop holds it, and a run took several times the CPU
  while another Python thread was busy.
- ``SequentialCascade``: any ``ModelRunner`` — the remote BentoML services, one call to the
  router and then one per specialist, the specialists concurrently.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from skewguard.bentos.inputs import Batch, Values, stack
from skewguard.bentos.manifest import RouterRef
from skewguard.bentos.routing import RowResult, answers_by_branch, route_rows, run_cascade, to_result
from skewguard.bentos.runner import OnnxRunner
from skewguard.errors import ConfigError, InputError, UpstreamTimeoutError
from skewguard.gateway.guard import SkewFlag, SkewGuard
from skewguard.gateway.runners import ModelRunner, Predictions


class CascadeRunner(Protocol):
    """The router and the specialists of one cascade version, whatever runs them."""

    @property
    def waiting_on(self) -> str:
        """The models a run in flight waits for (for the message of a request that ran out of time)."""
        ...

    async def run(self, batch: Batch, rows: Sequence[Mapping[str, Any]], deadline: float) -> list[RowResult]:
        """One result per row of ``batch`` (``rows``: the same rows as JSON, for remote models)."""
        ...


INLINE_ROWS = 64
"""``LocalCascade`` runs batches of up to this many rows on the event loop (a few ms at most)."""


class LocalCascade:
    """All graphs in this process: small batches on the event loop, larger ones in a worker thread.

    The thread is its own (it never waits on Feast's) and starts with the first large batch;
    it ends once a reload has replaced this cascade and its last run is done (the executor
    is collected).
    """

    def __init__(
        self,
        name: str,
        router_ref: RouterRef | None,
        router: OnnxRunner | None,
        branches: Mapping[str, OnnxRunner],
    ) -> None:
        self._ref = router_ref
        self._router = router
        self._branches = dict(branches)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"onnx-{name}")
        runners = [*([router] if router is not None else []), *self._branches.values()]
        self.waiting_on = ", ".join(r.model_tag for r in runners)

    async def run(self, batch: Batch, rows: Sequence[Mapping[str, Any]], deadline: float) -> list[RowResult]:
        if len(batch) <= INLINE_ROWS:
            return self.run_now(batch)
        return await asyncio.get_running_loop().run_in_executor(self._worker, self.run_now, batch)

    def run_now(self, batch: Batch) -> list[RowResult]:
        """The cascade over ``batch`` in the calling thread."""
        return run_cascade(self._ref, self._router, self._branches, batch)


class SequentialCascade:
    """Any runners (remote ones included): the router, then the branches' models concurrently."""

    def __init__(
        self, router_ref: RouterRef | None, router: ModelRunner | None, branches: Mapping[str, ModelRunner]
    ) -> None:
        self._ref = router_ref
        self._router = router
        self._branches = dict(branches)
        self.waiting_on = ""

    async def run(self, batch: Batch, rows: Sequence[Mapping[str, Any]], deadline: float) -> list[RowResult]:
        routed: list[dict[str, Any]] = [{}] * len(batch)
        if self._router is not None:
            self.waiting_on = self._router.tag
            routed = (await self._router.predict(batch, rows, deadline)).answers
        routes, p_router = route_rows(self._ref, routed, next(iter(self._branches)))
        calls: list[tuple[list[int], Any]] = []
        for branch, index in answers_by_branch(routes, list(self._branches)):
            part = batch.take(np.asarray(index, dtype=np.intp))
            calls.append((index, self._branches[branch].predict(part, [rows[i] for i in index], deadline)))
        self.waiting_on = ", ".join(self._branches[routes[index[0]]].tag for index, _ in calls)
        answers: list[Mapping[str, Any]] = [{}] * len(routes)
        outs: list[Predictions] = await asyncio.gather(*(call for _, call in calls))
        for (index, _), out in zip(calls, outs, strict=True):
            for position, answer in zip(index, out.answers, strict=True):
                answers[position] = answer
        return [
            to_result(route, p, answer) for route, p, answer in zip(routes, p_router, answers, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class Known:
    """What a request knows of its rows before the skew guard looks, one entry per row (empty: nothing).

    ``missing``: the online features defaulted; ``before`` and ``after``: flags of its own to
    put before and after the guard's (an unknown entity first; the store down, stale features last).
    """

    missing: Sequence[Sequence[str]] = ()
    before: Sequence[Sequence[SkewFlag]] = ()
    after: Sequence[Sequence[SkewFlag]] = ()


@dataclass(frozen=True, slots=True)
class Ran:
    """One request's share of a gathered run: its rows' results, flags and model inputs."""

    results: list[RowResult]
    flags: list[list[SkewFlag]]
    batch: Batch


@dataclass(slots=True, eq=False)  # compared and hashed by identity: the waiting jobs are a set
class _Job:
    values: Values
    rows: Sequence[Mapping[str, Any]]
    known: Known
    deadline: float
    future: asyncio.Future[Ran]


class GatheredCascade:
    """The rows of concurrent requests, through the skew guard and ``inner``, together.

    Each request hands in its validated values (``Values``); a run builds one array per field
    for all of its requests' rows, has ``guard`` flag them, fails the requests with a row the
    guard rejects (a 422 naming the field) and runs ``inner`` on the others' rows. Without a
    guard, rows are not flagged. ``calls`` and ``rows`` count the runs of ``inner`` and the
    rows they carried.
    """

    def __init__(
        self, name: str, inner: CascadeRunner, *, guard: SkewGuard | None = None, max_rows: int = 256
    ) -> None:
        if max_rows < 1:
            raise ConfigError(f"GatheredCascade needs max_rows >= 1, got {max_rows}.")
        self.name = name
        self.inner = inner
        self.guard = guard
        self.max_rows = max_rows
        self.calls = 0
        self.rows = 0
        self._queue: deque[_Job] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._waiting: set[_Job] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = math.inf

    async def run(
        self, values: Values, rows: Sequence[Mapping[str, Any]], deadline: float, known: Known = Known()
    ) -> Ran:
        """``values``' rows (``rows``: the same as JSON, for remote models) flagged and answered."""
        loop = asyncio.get_running_loop()
        job = _Job(values, rows, known, deadline, loop.create_future())
        self._queue.append(job)
        self._waiting.add(job)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        if deadline < self._watchdog_at:
            self._watch(loop, deadline)
        try:
            return await job.future
        finally:
            self._waiting.discard(job)

    @property
    def waiting_on(self) -> str:
        return self.inner.waiting_on

    def _watch(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Set the one timer of the requests' deadlines for ``deadline`` (the earliest of them)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog_at = deadline
        self._watchdog = loop.call_at(loop.time() + (deadline - time.monotonic()), self._expire)

    def _expire(self) -> None:
        """The timer: a 504 for each request past its deadline; set again for the earliest left."""
        self._watchdog, self._watchdog_at = None, math.inf
        now = time.monotonic()
        for job in [job for job in self._waiting if job.deadline <= now]:
            self._waiting.discard(job)
            if not job.future.done():
                job.future.set_exception(
                    UpstreamTimeoutError(
                        f"Cascade {self.name!r}: no answer within the request budget from "
                        f"{self.inner.waiting_on}."
                    )
                )
        if self._waiting:
            self._watch(asyncio.get_running_loop(), min(job.deadline for job in self._waiting))

    async def _drain(self) -> None:
        try:
            while self._queue:
                jobs = self._take()
                if jobs:
                    await self._run(jobs)
        finally:
            self._drainer = None

    def _take(self) -> list[_Job]:
        """Queued jobs, oldest first, while their rows fit in ``max_rows`` (at least one job)."""
        jobs: list[_Job] = []
        size = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # timed out or cancelled while queued
                self._queue.popleft()
                continue
            if jobs and size + len(job.values) > self.max_rows:
                break
            self._queue.popleft()
            jobs.append(job)
            size += len(job.values)
        return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        """One run of ``inner`` for the rows of ``jobs`` the guard lets through, until the latest of
        their deadlines; each job gets its rows' share, or the error that ended it."""
        try:
            batch = stack([job.values for job in jobs])
            admitted = self._admit(batch, jobs)
        except Exception as exc:  # noqa: BLE001 - a bug here is each request's answer (a logged 500)
            _fail([job for job in jobs if not job.future.done()], exc)
            return
        if not admitted:
            return
        if len(admitted) < len(jobs):
            keep = [i for job, _, start in admitted for i in range(start, start + len(job.values))]
            batch = batch.take(np.asarray(keep, dtype=np.intp))
        rows = jobs[0].rows if len(jobs) == 1 else [row for job, _, _ in admitted for row in job.rows]
        self.calls += 1
        self.rows += len(batch)
        try:
            results = await self.inner.run(batch, rows, max(job.deadline for job, _, _ in admitted))
        except Exception as exc:  # noqa: BLE001 - the run's failure is each request's answer
            _fail([job for job, _, _ in admitted], exc)
            return
        start = 0
        for job, flags, _ in admitted:
            end = start + len(job.values)
            if not job.future.done():
                own = batch if len(admitted) == 1 else batch.slice(start, end)
                job.future.set_result(Ran(results[start:end], flags, own))
            start = end

    def _admit(self, batch: Batch, jobs: list[_Job]) -> list[tuple[_Job, list[list[SkewFlag]], int]]:
        """The jobs the guard lets through: each with its rows' flags and its first row in ``batch``.

        A job with a row the guard rejects gets the 422 naming the field, and no run.
        """
        guard = self.guard
        if guard is None:
            flags: list[list[SkewFlag]] = [[] for _ in range(len(batch))]
        else:
            missing = [m for job in jobs for m in (job.known.missing or [()] * len(job.values))]
            flags = guard.check(batch, missing_online=missing)
        admitted = []
        start = 0
        for job in jobs:
            end = start + len(job.values)
            own = _assemble(job.known, flags[start:end])
            rejected = None if guard is None else next(filter(None, map(guard.rejected, own)), None)
            if rejected is None:
                admitted.append((job, own, start))
            elif not job.future.done():
                job.future.set_exception(
                    InputError(f"Rejected by the skew guard: {rejected.detail}", field=rejected.field)
                )
            start = end
        return admitted


def _assemble(known: Known, flags: list[list[SkewFlag]]) -> list[list[SkewFlag]]:
    """Each row's flags: the request's own before the guard's, then its own after."""
    if known.before:
        flags = [[*before, *row] for before, row in zip(known.before, flags, strict=True)]
    if known.after:
        for row, after in zip(flags, known.after, strict=True):
            row.extend(after)
    return flags


def _fail(jobs: Sequence[_Job], exc: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)
