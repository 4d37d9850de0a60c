"""Prometheus metrics of one gateway: latency per cascade and route, errors, skew flags, log."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GatewayMetrics:
    """The gateway's own registry (no process-global state, so tests can build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self._log_stats: Callable[[], dict[str, int]] = lambda: {"dropped": 0, "queued": 0}
        self.registry.register(self)

    def watch_log(self, stats: Callable[[], dict[str, int]]) -> None:
        """Read the prediction log's counters at scrape time."""
        self._log_stats = stats

    def collect(self) -> Iterator[Metric]:
        """The prediction log's figures, read when scraped (the registry calls this)."""
        stats = self._log_stats()
        yield CounterMetricFamily(
            "skewguard_prediction_log_dropped",  # exposed as ..._dropped_total
            "Prediction-log records dropped: queue full, refused by the database, or unwritten at shutdown.",
            value=stats["dropped"],
        )
        yield GaugeMetricFamily(
            "skewguard_prediction_log_queued",
            "Prediction-log records waiting to be written.",
            value=stats["queued"],
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
