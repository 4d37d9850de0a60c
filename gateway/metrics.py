"""Prometheus metrics of one gateway: latency per cascade and route, errors, skew flags, variants, log.

With several worker processes (``SKEWGUARD_WORKERS``) each keeps its values in the files of
prometheus_client's multiprocess mode (``multiprocess_dir``), and a scrape of any worker
renders the sum over all of them; the prediction log's figures are published into those
files by each worker (``publish_log_stats``) rather than read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LOG = "skewguard_prediction_log_"
_LOG_COUNTERS = {  # each exposed as skewguard_prediction_log_<key>_total
    "written": "Prediction-log records written to the database.",
    "dropped": "Prediction-log records dropped: queue full, refused by the database, or unwritten at "
    "shutdown.",
    "write_errors": "Failed attempts to write a batch of the prediction log (retried with backoff).",
    "pruned": "Prediction-log records deleted by the retention (SKEWGUARD_LOG_RETENTION_DAYS).",
}
_QUEUED = _LOG + "queued"
_QUEUED_HELP = "Prediction-log records waiting to be written."
_M = TypeVar("_M", Counter, Histogram)


class GatewayMetrics:
    """The gateway's own registry (no process-global state, so tests can build many apps)."""

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self.latency = Histogram(
            "skewguard_request_seconds",
            "Predict latency per cascade and route (route 'mixed' for batches over both).",
            ["cascade", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "skewguard_rows_total", "Rows served.", ["cascade", "route"], registry=self.registry
        )
        self.errors = Counter(
            "skewguard_errors_total",
            "Error responses by code and status.",
            ["code", "status"],
            registry=self.registry,
        )
        self.skew_flags = Counter(
            "skewguard_skew_flags_total",
            "Skew flags raised, by kind.",
            ["cascade", "kind"],
            registry=self.registry,
        )
        self.variant_rows = Counter(
            "skewguard_variant_rows_total",
            "Rows per variant: answered by the champion or a canary, or copied to a shadow.",
            ["cascade", "variant"],
            registry=self.registry,
        )
        self.shadow_runs = Counter(
            "skewguard_shadow_runs_total",
            "Shadow runs of a candidate, by outcome (ok, or the error code it failed with).",
            ["cascade", "outcome"],
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "skewguard_shadow_dropped_total",
            "Shadow copies dropped before they ran, by reason: busy (no spare capacity), queue_full, "
            "waited_too_long, shutdown.",
            ["cascade", "reason"],
            registry=self.registry,
        )
        self.canary_fallbacks = Counter(
            "skewguard_canary_fallbacks_total",
            "Requests a canary failed on and the champion answered instead, by the canary's error code.",
            ["cascade", "code"],
            registry=self.registry,
        )
        self.champion_behind = Gauge(
            "skewguard_champion_behind",
            "1 while this replica may serve an older champion than the alias names: the alias "
            "store or the model export could not be read, or the new champion did not load.",
            multiprocess_mode="max",
            registry=self.registry,
        )
        self.champion_follow_failures = Counter(
            "skewguard_champion_follow_failures_total",
            "Failed attempts to read the champion alias or to import and load a promoted champion.",
            registry=self.registry,
        )
        self._log_stats: Callable[[], dict[str, int]] = lambda: dict.fromkeys([*_LOG_COUNTERS, "queued"], 0)
        if multiprocess_dir is None:
            self.registry.register(self)
        else:
            self._log_counters = {
                key: Counter(_LOG + key, doc, registry=self.registry) for key, doc in _LOG_COUNTERS.items()
            }
            self._queued = Gauge(_QUEUED, _QUEUED_HELP, multiprocess_mode="livesum", registry=self.registry)
            self._published = dict.fromkeys(_LOG_COUNTERS, 0)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: _M, *labels: str) -> _M:
        """``metric.labels(*labels)``, kept: the request path asks for the same few series each time.

        The labels are cascades, routes, variants, flag kinds and error codes: a bounded set.
        """
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def watch_log(self, stats: Callable[[], dict[str, int]]) -> None:
        """Where the prediction log's counters are read (at scrape time, or when published)."""
        self._log_stats = stats

    def collect(self) -> Iterator[Metric]:
        """The prediction log's figures, read when scraped (the registry calls this)."""
        stats = self._log_stats()
        for key, doc in _LOG_COUNTERS.items():
            yield CounterMetricFamily(_LOG + key, doc, value=stats[key])
        yield GaugeMetricFamily(_QUEUED, _QUEUED_HELP, value=stats["queued"])

    def publish_log_stats(self) -> None:
        """Multiprocess mode: write this worker's prediction-log figures where every scrape reads them."""
        if self.multiprocess_dir is None:
            return
        stats = self._log_stats()
        for key, counter in self._log_counters.items():
            if stats[key] > self._published[key]:
                counter.inc(stats[key] - self._published[key])
                self._published[key] = stats[key]
        self._queued.set(stats["queued"])

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.publish_log_stats()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(merged)
