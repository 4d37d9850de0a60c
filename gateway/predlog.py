"""The prediction log: one record per served row, written behind the response in batches.

``submit`` never waits: it appends to a bounded in-memory queue and returns. One writer
task takes up to ``batch_size`` records at a time (or whatever arrived within
``flush_interval``) and inserts them from a dedicated thread, so the event loop never
waits on the database. While the database is unreachable the records stay queued and the
writer retries with exponential backoff, counting ``write_errors``; once the queue holds
``max_queue`` records, further ones are refused and counted as ``dropped`` — serving goes
on, and the loss shows in ``stats``. ``drain`` (on shutdown) writes what is queued and
stops the writer; whatever it could not write in time is counted as dropped as well.

With a retention (``retention_seconds``; ``SKEWGUARD_LOG_RETENTION_DAYS``), the writer also
deletes the records older than it: after its first write and then every ``PRUNE_EVERY_S``,
in the same thread, in transactions of ``PRUNE_BATCH`` rows, so serving never waits on it
(and not while draining: a shutdown writes what is queued and nothing else).

Records are removed from the queue only after their batch is committed, so a failed write
loses nothing; a batch retried after an ambiguous commit is not written twice (see
``skewguard.predictionlog.store``, which owns the table and the database errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from skewguard.errors import ConfigError, PredictionLogError
from skewguard.predictionlog.records import PredictionRecord
from skewguard.predictionlog.store import COLUMNS, PRUNE_BATCH, LogStore, open_store

logger = logging.getLogger(__name__)
_values = operator.attrgetter(*COLUMNS)
PRUNE_EVERY_S = 600.0
"""With a retention: how often the writer deletes the records older than it."""


def _write_salvaging(store: LogStore, records: Sequence[PredictionRecord]) -> tuple[int, int, str]:
    """Write a batch; if rows (not the database) are at fault, write them one by one.

    Returns ``(new, rejected, reason)``. A transient error propagates: the caller retries.
    """
    rows = [_values(record) for record in records]
    try:
        return store.write(rows), 0, ""
    except PredictionLogError as exc:
        if exc.transient:
            raise
        reason = exc.message
    new = rejected = 0
    for row in rows:
        try:
            new += store.write([row])
        except PredictionLogError as exc:
            if exc.transient:
                raise
            rejected += 1
    return new, rejected, reason


class PredictionLog:
    """A bounded queue of prediction records and the task that writes them (see module doc).

    Use from the event loop's thread: ``await log.start()`` at start-up, ``log.submit(...)``
    per response, ``await log.drain()`` at shutdown. ``stats`` is for the metrics endpoint.
    """

    def __init__(
        self,
        store: LogStore,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_backoff: float = 5.0,
        retention_seconds: float | None = None,
    ) -> None:
        for name, value in (("max_queue", max_queue), ("batch_size", batch_size)):
            if value < 1:
                raise ConfigError(f"Prediction log {name} must be at least 1, got {value}.", field=name)
        if retention_seconds is not None and not retention_seconds > 0:
            raise ConfigError(
                f"Prediction log retention must be positive (or none), got {retention_seconds} s.",
                field="retention",
            )
        for name, seconds in (("flush_interval", flush_interval), ("max_backoff", max_backoff)):
            if not seconds > 0:
                raise ConfigError(f"Prediction log {name} must be positive, got {seconds}.", field=name)
        self.store = store
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.retention_seconds = retention_seconds
        self.last_error: str | None = None
        self._queue: deque[PredictionRecord] = deque()
        self._counts = {"written": 0, "dropped": 0, "write_errors": 0, "duplicates": 0, "pruned": 0}
        self._next_prune = 0.0  # monotonic: the first write prunes
        self._arrived = asyncio.Event()  # the queue stopped being empty, or we are closing
        self._full = asyncio.Event()  # a whole batch is queued, or we are closing
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        table: str = "predictions",
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_backoff: float = 5.0,
        retention_seconds: float | None = None,
    ) -> PredictionLog:
        """A log writing to ``sqlite:///path/to/log.db`` or ``postgresql://user@host:port/db``."""
        return cls(
            open_store(url, table=table),
            max_queue=max_queue,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_backoff=max_backoff,
            retention_seconds=retention_seconds,
        )

    @property
    def stats(self) -> dict[str, int]:
        """``queued`` (includes a batch being written), ``written``, ``dropped``, ``write_errors``,
        ``duplicates`` (rows already in the table, skipped), ``pruned`` (deleted by the retention)."""
        return {"queued": len(self._queue), **self._counts}

    async def start(self) -> None:
        """Create the table if it is missing and start the writer.

        An unreachable database does not stop start-up: serving goes on, records queue up
        and the writer keeps retrying (see ``stats`` and ``last_error``).
        """
        if self._writer is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predlog")
        try:
            await self._in_thread(self.store.prepare)
        except PredictionLogError as exc:
            self._failed(exc, first=True)
        self._writer = asyncio.create_task(self._run(), name="prediction-log-writer")
        self._writer.add_done_callback(_report_crash)

    def submit(self, records: Sequence[PredictionRecord]) -> bool:
        """Queue records without waiting; False if some were refused (queue full or drained).

        Refused records are counted in ``stats["dropped"]``.
        """
        room = 0 if self._closing else self.max_queue - len(self._queue)
        accepted = records[: max(room, 0)]
        if accepted:
            if not self._queue:
                self._arrived.set()
            self._queue.extend(accepted)
            if len(self._queue) >= self.batch_size:
                self._full.set()
        refused = len(records) - len(accepted)
        if refused:
            if self._counts["dropped"] == 0:
                logger.warning(
                    "Prediction log: queue full or closed; dropping records (%s).", self.store.description
                )
            self._counts["dropped"] += refused
        return refused == 0

    async def drain(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop the writer and close the database.

        Records still queued after ``timeout`` seconds (the database is down) are counted
        as dropped — a batch being written at that moment may still land. Later ``submit``
        calls are refused and counted the same way.
        """
        self._closing = True
        self._arrived.set()
        self._full.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            await asyncio.wait([writer], timeout=timeout)
        finished = writer is None or writer.done()
        if writer is not None:
            writer.cancel()  # still retrying a database that is down
        if self._queue:  # not written in time, or never started, or the writer crashed
            lost = len(self._queue)
            self._counts["dropped"] += lost
            self._queue.clear()
            logger.error("Prediction log: %d records not written before shutdown: %s", lost, self.last_error)
        executor, self._executor = self._executor, None
        if executor is not None:
            if finished:  # otherwise the thread may still be inside a call on the connection
                await asyncio.get_running_loop().run_in_executor(executor, self.store.close)
            executor.shutdown(wait=False, cancel_futures=True)

    async def count(self) -> int:
        """How many records the table holds."""
        return int(await self._in_thread(self.store.count))

    async def read(
        self, *, since: float | None = None, until: float | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Records with ``since <= ts < until``, oldest first, as dicts (see ``read_records``)."""
        rows: list[dict[str, Any]] = await self._in_thread(self.store.read, since, until, limit)
        return rows

    async def _in_thread(self, call: Any, *args: Any) -> Any:
        if self._executor is None:
            raise ConfigError("The prediction log is not running: call `await log.start()` (before `drain`).")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._batch_ready()
            if not self._queue:
                return  # closing, and everything is written
            batch = [self._queue[i] for i in range(min(self.batch_size, len(self._queue)))]
            try:
                new, rejected, reason = await self._in_thread(_write_salvaging, self.store, batch)
            except PredictionLogError as exc:
                self._failed(exc, first=failures == 0)
                failures += 1
                await asyncio.sleep(min(self.max_backoff, 0.05 * 2 ** min(failures, 16)))
                continue
            if failures:
                logger.warning("Prediction log: writing again after %d failed attempts.", failures)
                failures = 0
            for _ in batch:
                self._queue.popleft()
            self._counts["written"] += new
            self._counts["duplicates"] += len(batch) - new - rejected
            if rejected:
                self._counts["dropped"] += rejected
                refused = PredictionLogError(f"{rejected} records refused by the database: {reason}")
                self._failed(refused, first=True)
            retention = self.retention_seconds
            if retention is not None and not self._closing and time.monotonic() >= self._next_prune:
                await self._prune(retention)

    async def _prune(self, retention: float) -> None:
        """Delete the records older than ``retention``; a failure waits for the next round."""
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        try:
            deleted = await self._in_thread(self.store.prune, time.time() - retention, PRUNE_BATCH)
        except PredictionLogError as exc:
            self._failed(exc, first=True)
            return
        self._counts["pruned"] += deleted
        if deleted:
            logger.info(
                "Prediction log: deleted %d records older than %.4g days.", deleted, retention / 86400
            )

    async def _batch_ready(self) -> None:
        """Wait for a first record, then up to ``flush_interval`` for a whole batch."""
        if not self._queue and not self._closing:
            self._arrived.clear()
            await self._arrived.wait()
        if len(self._queue) < self.batch_size and not self._closing:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_interval)

    def _failed(self, exc: PredictionLogError, *, first: bool) -> None:
        if first:  # once per outage, not once per retry
            logger.warning("%s", exc.message)
        self._counts["write_errors"] += 1
        self.last_error = exc.message


def _report_crash(writer: asyncio.Task[None]) -> None:
    """A writer that died of a bug must not go unnoticed while records pile up."""
    if not writer.cancelled() and writer.exception() is not None:
        logger.error(
            "Prediction log writer stopped: records are no longer written.", exc_info=writer.exception()
        )
