"""Online features for the request path: the ``FeatureSource`` role and its implementations.

:class:`FeastFeatureSource` reads one cascade's features from Feast's online store (SQLite
by default, Redis in production) without blocking the event loop: the blocking read runs
in one dedicated thread (SQLite's online store shares one connection, so one thread),
handed over through a queue rather than an executor and ``asyncio.wait``, which costs less
CPU per hop. The lookups of concurrent requests are gathered into one call, because
Feast's cost is mostly per call, not per entity. There is no timer: a lone request is
sent at once; requests arriving while a call is in flight are queued and served together
by the next call (up to ``max_batch`` distinct ids).

:class:`FeatureSources` gives each served cascade the source of its manifest's features
(project, entity key, references), one per distinct set, shared by the cascades that read
the same. :class:`StaticFeatureSource` answers from a dict, for tests of the modules that
use features.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from skewguard.bentos.manifest import CascadeManifest
from skewguard.errors import ConfigError, FeatureStoreUnavailable
from skewguard.featurestore.connection import FeastConfig
from skewguard.featurestore.online import EntityId, EntityType, OnlineFeatureReader, OnlineRow
from skewguard.settings import Settings

Row = OnlineRow
_Outcome = list[Row | None] | BaseException
_PROBE_IDS: dict[str, EntityId] = {"int64": -(2**63), "string": "\x00skewguard-probe"}
"""An id no entity has: a read that touches the registry and the store."""


@dataclass(frozen=True, slots=True)
class FeatureBinding:
    """What a cascade reads from the feature store: its project, entity key and references."""

    project: str
    entity_key: str
    entity_type: EntityType
    refs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, manifest: CascadeManifest) -> FeatureBinding | None:
        """The manifest's binding; None for a cascade without online features."""
        if manifest.entity_key is None or not manifest.feature_refs or manifest.feature_project is None:
            return None
        refs = tuple(sorted(manifest.feature_refs.items()))
        return cls(manifest.feature_project, manifest.entity_key, manifest.entity_key_type, refs)


class FeatureSource(Protocol):
    """Online features by entity id: the role the request path depends on."""

    async def get(self, entity_ids: Sequence[EntityId]) -> list[OnlineRow | None]:
        """One row of values (with their event times) per id, in the order asked; None for an unknown entity.

        Raises FeatureStoreUnavailable when the store is down, failing or too slow.
        """
        ...

    async def ping(self) -> None:
        """Return when the store answers a read; raise a SkewguardError saying why it does not."""
        ...

    async def close(self) -> None:
        """Finish the reads in flight and let go of the store."""
        ...

    def preload(self) -> None:
        """Import what reading will need, opening nothing (a pre-fork master calls it)."""
        ...


@dataclass(slots=True)
class _Lookup:
    """One caller's ids and the future its answer goes to."""

    ids: list[EntityId]
    future: asyncio.Future[list[Row | None]]


class FeastFeatureSource:
    """Feast's online store behind a micro-batcher and one worker thread.

    ``timeout`` bounds each SDK call (``open_timeout`` the first, which opens the store);
    a call that overruns answers its callers FeatureStoreUnavailable, and while it still
    occupies the worker, later calls wait for it at most their own timeout. ``calls`` and
    ``entities`` count the SDK calls made and the ids they carried.
    """

    def __init__(
        self,
        config: FeastConfig,
        binding: FeatureBinding,
        *,
        timeout: float = 0.5,
        open_timeout: float = 10.0,
        max_batch: int = 64,
    ) -> None:
        if timeout <= 0 or open_timeout <= 0 or max_batch < 1:
            raise ConfigError(
                f"FeastFeatureSource needs timeout > 0, open_timeout > 0 and max_batch >= 1; got "
                f"timeout={timeout}, open_timeout={open_timeout}, max_batch={max_batch}."
            )
        self.config = config
        self.timeout = timeout
        self.open_timeout = open_timeout
        self.max_batch = max_batch
        self.calls = 0
        self.entities = 0
        self.binding = binding
        self._reader = OnlineFeatureReader(
            config, entity_key=binding.entity_key, refs=dict(binding.refs), entity_type=binding.entity_type
        )
        self._worker = _Thread("feast-online")
        self._queue: deque[_Lookup] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Future[list[Row | None]] | None = None
        self._opened = False
        self._closed = False

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._reader.feature_names

    async def get(self, entity_ids: Sequence[EntityId]) -> list[OnlineRow | None]:
        """The features of each id, in the order asked (repeats are fine); None for an unknown id."""
        if self._closed:
            raise FeatureStoreUnavailable(
                f"The online feature source ({self.config.describe()}) is closed; the gateway is stopping."
            )
        ids = list(entity_ids)
        if not ids:
            return []
        loop = asyncio.get_running_loop()
        lookup = _Lookup(ids, loop.create_future())
        self._queue.append(lookup)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await lookup.future

    def preload(self) -> None:
        """Import the SDK's modules for the store, opening nothing (a pre-fork master calls it)."""
        self._reader.import_store_modules()

    async def ping(self) -> None:
        """Read an id no entity has: opens the store, checks the registry and the connection."""
        await self.get([_PROBE_IDS[self.binding.entity_type]])

    async def close(self) -> None:
        """Serve what is queued, refuse new reads, let go of the store and stop the worker."""
        if self._closed:
            return
        self._closed = True
        if self._drainer is not None:
            await self._drainer
        release = self._worker.submit(self._reader.close)
        release.add_done_callback(_retrieve)
        await _wait(release, self.timeout)  # a hung call keeps the worker busy
        self._worker.stop()

    async def _drain(self) -> None:
        """Serve the queue one SDK call at a time until it is empty."""
        batch: list[_Lookup] = []
        try:
            while self._queue:
                batch, ids = self._take_batch()
                if ids:
                    self._answer(batch, ids, await self._call(ids))
        finally:
            self._drainer = None
            stopped = FeatureStoreUnavailable("The online feature reader stopped before answering.")
            for lookup in [*batch, *self._queue]:  # only left over when the drainer was cancelled
                _settle(lookup, stopped)
            self._queue.clear()

    def _take_batch(self) -> tuple[list[_Lookup], list[EntityId]]:
        """Queued lookups, oldest first, while their distinct ids fit in ``max_batch`` (at least one)."""
        batch: list[_Lookup] = []
        ids: dict[EntityId, None] = {}
        while self._queue:
            lookup = self._queue[0]
            if lookup.future.done():  # its caller gave up (cancelled)
                self._queue.popleft()
                continue
            new = [entity_id for entity_id in dict.fromkeys(lookup.ids) if entity_id not in ids]
            if batch and len(ids) + len(new) > self.max_batch:
                break
            self._queue.popleft()
            batch.append(lookup)
            ids.update(dict.fromkeys(new))
        return batch, list(ids)

    async def _call(self, ids: list[EntityId]) -> _Outcome:
        """One SDK call in the worker thread, within the deadline: its rows, or why there are none."""
        loop = asyncio.get_running_loop()
        budget = self.timeout if self._opened else self.open_timeout
        deadline = loop.time() + budget
        previous = self._in_flight
        if previous is not None and not previous.done():  # an earlier call overran and still runs
            await _wait(previous, budget)
            if not previous.done():
                return FeatureStoreUnavailable(
                    f"The online feature store ({self.config.describe()}) has not answered an earlier "
                    f"call that overran its timeout, nor within {budget:.3g} s more; its worker is still "
                    "waiting for it. Check the store."
                )
        call = self._worker.submit(self._reader.read, ids)
        call.add_done_callback(_retrieve)
        self._in_flight = call
        self.calls += 1
        self.entities += len(ids)
        await _wait(call, deadline - loop.time())
        if not call.done():
            return FeatureStoreUnavailable(
                f"The online feature store ({self.config.describe()}) did not answer {len(ids)} ids "
                f"within {budget:.3g} s. Check the store, or raise the timeout."
            )
        failure = call.exception()
        if failure is not None:
            return failure
        self._opened = True
        return call.result()

    @staticmethod
    def _answer(batch: list[_Lookup], ids: list[EntityId], outcome: _Outcome) -> None:
        """Each lookup's rows (immutable, shared between lookups), or the call's failure."""
        if isinstance(outcome, BaseException):
            for lookup in batch:
                _settle(lookup, outcome)
            return
        by_id = dict(zip(ids, outcome, strict=True))
        for lookup in batch:
            _settle(lookup, [by_id[entity_id] for entity_id in lookup.ids])


def _settle(lookup: _Lookup, outcome: _Outcome) -> None:
    if lookup.future.done():  # cancelled by its caller meanwhile
        return
    if isinstance(outcome, BaseException):
        lookup.future.set_exception(outcome)
    else:
        lookup.future.set_result(outcome)


def _retrieve(call: asyncio.Future[Any]) -> None:
    """Mark an overrun call's late failure as seen (nobody awaits it any more)."""
    if not call.cancelled():
        call.exception()


async def _wait(call: asyncio.Future[Any], timeout: float) -> None:
    """Return when ``call`` is done or ``timeout`` seconds have passed, leaving ``call`` running."""
    if call.done():
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(max(timeout, 0.0), wake)
    call.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        call.remove_done_callback(wake)


_T = TypeVar("_T")
_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class _Thread:
    """One daemon thread running blocking calls in order; each answer goes back as a loop future.

    Started on the first call (so a gateway forked from a preloaded master starts its own),
    and a daemon, so a call hung in the store cannot hold up the process's exit.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """``function(*args)`` in the thread, after the calls before it; its result or failure."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put((function, args, loop, future))
        return future

    def stop(self) -> None:
        """Let the thread end once the calls before this one are done (a hung one keeps it)."""
        self._jobs.put(None)
        self._thread = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            function, args, loop, future = job
            result, failure = None, None
            try:
                result = function(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the caller's future
                failure = error
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(_complete, future, result, failure)


def _complete(future: asyncio.Future[Any], result: Any, failure: BaseException | None) -> None:
    if future.done():
        return
    if failure is None:
        future.set_result(result)
    else:
        future.set_exception(failure)


class StaticFeatureSource:
    """Features from a dict ``{entity_id: {feature: value}}``; ids not in it are unknown.

    For tests of the modules that use features: ``available = False`` makes every read
    raise FeatureStoreUnavailable; ``calls`` counts the reads; ``event_times`` (per id,
    epoch seconds) dates an entity's values, which are otherwise undated (never stale).
    """

    def __init__(
        self,
        rows: Mapping[EntityId, Mapping[str, float | None]],
        *,
        available: bool = True,
        event_times: Mapping[EntityId, float] | None = None,
    ) -> None:
        self.rows = {entity_id: dict(row) for entity_id, row in rows.items()}
        self.event_times = dict(event_times or {})
        self.available = available
        self.calls = 0
        self.closed = False

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for row in self.rows.values() for name in row))

    async def get(self, entity_ids: Sequence[EntityId]) -> list[OnlineRow | None]:
        """Each id's row, in the order asked; None for an id not in the dict."""
        await self.ping()
        self.calls += 1
        return [self._row(entity_id) for entity_id in entity_ids]

    def _row(self, entity_id: EntityId) -> OnlineRow | None:
        row = self.rows.get(entity_id)
        if row is None:
            return None
        stamp = self.event_times.get(entity_id)
        return OnlineRow(dict(row), {} if stamp is None else dict.fromkeys(row, stamp))

    async def ping(self) -> None:
        if not self.available:
            raise FeatureStoreUnavailable("The static feature source is switched off (available=False).")

    async def close(self) -> None:
        self.closed = True

    def preload(self) -> None:
        """Nothing to import."""


SourceFactory = Callable[[FeatureBinding], FeatureSource]


class FeatureSources:
    """The feature source of each served cascade: one per distinct binding, made on first use.

    ``make`` builds a source for a binding (Feast's by default; one shared static source in
    tests). A reload that changes a cascade's features opens a new source; :meth:`retain`
    closes the ones no served cascade uses any more.
    """

    def __init__(self, make: SourceFactory) -> None:
        self._make = make
        self._open: dict[FeatureBinding, FeatureSource] = {}

    @classmethod
    def feast(cls, settings: Settings, *, timeout: float = 0.5) -> FeatureSources:
        """Feast's online store, as the settings configure it, for every binding."""

        def make(binding: FeatureBinding) -> FeatureSource:
            config = FeastConfig.for_project(settings, binding.project)
            return FeastFeatureSource(config, binding, timeout=timeout)

        return cls(make)

    @classmethod
    def fixed(cls, source: FeatureSource) -> FeatureSources:
        """One source answering every cascade's features (tests, benchmarks)."""
        return cls(lambda binding: source)

    def for_manifest(self, manifest: CascadeManifest) -> FeatureSource | None:
        """The source of ``manifest``'s features; None when it reads none."""
        binding = FeatureBinding.of(manifest)
        if binding is None:
            return None
        if binding not in self._open:
            self._open[binding] = self._make(binding)
        return self._open[binding]

    def all(self) -> list[FeatureSource]:
        """The open sources, each once."""
        return list({id(source): source for source in self._open.values()}.values())

    async def retain(self, manifests: Sequence[CascadeManifest]) -> None:
        """Close the sources none of ``manifests`` reads (after a reload swapped them out)."""
        keep = {FeatureBinding.of(m) for m in manifests}
        kept = {id(self._open[b]) for b in keep if b in self._open}
        for binding in [b for b in self._open if b not in keep]:
            source = self._open.pop(binding)
            if id(source) not in kept:
                await source.close()

    async def close(self) -> None:
        for source in self.all():
            await source.close()
        self._open.clear()
