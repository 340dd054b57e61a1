"""Prometheus metrics: what each process counts, and how it serves them.

Each process builds its own set on a registry of its own (nothing is registered at import time):
`ApiMetrics` (served by the API at `/metrics`), `SchedulerMetrics` and `DeliveryMetrics` (a worker's
pool processes), the last two served on `TIMERS_METRICS_PORT`. A prefork worker's pool processes
write their values to files in a directory the worker's main process made before forking
(prometheus-client's multiprocess mode); the main process serves their sum, so one scrape of a
worker gives the whole worker, and a pool process that is replaced takes its in-flight gauge along.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
import prometheus_client.multiprocess
import prometheus_client.values
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from timers.storage import ScheduleCounts

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: from a few ms (a timer on time) to minutes (a backlog, a retry after an outage).
LATENESS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
)  # fmt: skip
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class DeliveryMetrics:
    """What a worker process's delivery engine counts."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.lateness = Histogram(
            "timers_callback_lateness_seconds",
            "From a timer's due time to the start of its delivery, by callback kind.",
            ["kind"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.deliveries = Counter(
            "timers_deliveries",
            "Delivery attempts by callback kind and outcome (completed, failed, retrying).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "timers_delivery_duration_seconds",
            "How long one delivery attempt took, by callback kind.",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "timers_deliveries_in_flight",
            "Deliveries running now.",
            registry=registry,
            multiprocess_mode="livesum",
        )

        # The labelled series by (kind, outcome), looked up once: `labels()` costs more than
        # the observation itself, and there are only a few of them.
        self._series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def finished(self, kind: str, outcome: str, late_seconds: float, took: float) -> None:
        series = self._series.get((kind, outcome))
        if series is None:
            series = self._series[kind, outcome] = (
                self.lateness.labels(kind),
                self.deliveries.labels(kind, outcome),
                self.duration.labels(kind),
            )
        lateness, deliveries, duration = series
        lateness.observe(max(late_seconds, 0.0))
        deliveries.inc()
        duration.observe(took)


class SchedulerMetrics:
    """What the scheduler counts; the backlog and pending gauges are read at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.enqueued = Counter(
            "timers_enqueued", "Callbacks handed to the broker.", registry=self.registry
        )
        self.claim_duration = Histogram(
            "timers_claim_duration_seconds",
            "One claim statement (a batch of due timers).",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.load_duration = Histogram(
            "timers_load_duration_seconds",
            "One load of the near-term timers (with recovery).",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.recovered = Counter(
            "timers_recovered",
            "Claims and delivery leases taken back and fired again.",
            registry=self.registry,
        )
        self.purged = Counter(
            "timers_purged",
            "Finished timers deleted by retention.",
            registry=self.registry,
        )
        self.cache_size = Gauge(
            "timers_cache_size", "Timers in the scheduler's cache.", registry=self.registry
        )

    def watch_cache(self, size: Callable[[], int]) -> None:
        self.cache_size.set_function(size)

    def watch_store(
        self, due_backlog: Callable[[], int], pending: Callable[[], int], every: float = 5.0
    ) -> None:
        """Read the backlog and pending count when scraped, at most once per `every` seconds."""
        self.registry.register(StoreGauges(due_backlog, pending, every))

    def watch_schedules(self, counts: Callable[[], ScheduleCounts], every: float = 5.0) -> None:
        """Read the schedules' counts when scraped, at most once per `every` seconds."""
        self.registry.register(ScheduleGauges(counts, every))


class ScheduleGauges(Collector):
    """`timers_schedules{state}` and `timers_schedule_slots_skipped`, read from the store at
    scrape time (one statement; none while nobody scrapes), cached for `every` seconds."""

    def __init__(self, counts: Callable[[], ScheduleCounts], every: float) -> None:
        self._counts = counts
        self._every = every
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._values: ScheduleCounts | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._at >= self._every:
                try:
                    self._values = self._counts()
                except Exception as exc:
                    log.warning("metrics: reading the schedules failed: %s", exc)
                    self._values = None
                self._at = time.monotonic()
            values = self._values
        if values is None:
            return
        by_state = GaugeMetricFamily(
            "timers_schedules", "Schedules by state (active, paused, ended).", labels=["state"]
        )
        for state in ("active", "paused", "ended"):
            by_state.add_metric([state], getattr(values, state))
        yield by_state
        yield GaugeMetricFamily(
            "timers_schedule_slots_skipped",
            "Slots the schedules skipped (too late, or overlapping), by the claim and by the "
            "sweeps, summed over the schedules that exist.",
            value=values.skipped,
        )


class StoreGauges(Collector):
    """`timers_due_backlog` and `timers_pending`, read from the store at scrape time (so an idle
    scheduler that nobody scrapes sends no statement for them), cached for `every` seconds."""

    def __init__(
        self, due_backlog: Callable[[], int], pending: Callable[[], int], every: float
    ) -> None:
        self._read = (due_backlog, pending)
        self._every = every
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._values: tuple[int, int] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._at >= self._every:
                try:
                    self._values = (self._read[0](), self._read[1]())
                except Exception as exc:
                    log.warning("metrics: reading the backlog failed: %s", exc)
                    self._values = None
                self._at = time.monotonic()
            values = self._values
        if values is None:
            return
        yield GaugeMetricFamily(
            "timers_due_backlog",
            "Pending timers already due and not yet claimed (counted up to 100,000).",
            value=values[0],
        )
        yield GaugeMetricFamily(
            "timers_pending",
            "Pending timers (an estimate on tables of 100,000 rows or more).",
            value=values[1],
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # collected lazily: never at registration


class ApiMetrics:
    """Requests by route (its template, not the path), method and status code."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "timers_api_requests",
            "API requests by route, method and status code.",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "timers_api_request_duration_seconds",
            "API request duration by route and method.",
            ["route", "method"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def observe(self, route: str, method: str, code: int, took: float) -> None:
        self.requests.labels(route, method, str(code)).inc()
        self.duration.labels(route, method).observe(took)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus's text format, and its content type."""
    return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST


def serve(port: int, registry: CollectorRegistry) -> Any:
    """Serve `/metrics` on all interfaces at `port` from a thread; returns the server."""
    server, _ = prometheus_client.start_http_server(port, addr="0.0.0.0", registry=registry)
    log.info("metrics on :%d/metrics", port)
    return server


class PoolCollector(prometheus_client.multiprocess.MultiProcessCollector):
    """The sum over a worker's pool processes, without the live gauges of a process that was
    killed (one that stops normally drops them itself)."""

    def __init__(self) -> None:
        super().__init__(None)

    def collect(self) -> Iterator[Any]:
        path = os.environ.get(MULTIPROC_ENV, "")
        for live in glob.glob(os.path.join(path, "gauge_livesum_*.db")):
            pid = int(live.rsplit("_", 1)[1].split(".")[0])
            if not _alive(pid):
                prometheus_client.multiprocess.mark_process_dead(pid, path)
        return super().collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerMetricsServer:
    """A worker's main process: before the pool forks, a directory for the pool processes'
    values (unless `PROMETHEUS_MULTIPROC_DIR` names one already), then their sum on `port`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._made: str | None = None
        self._server: Any = None

    def start(self) -> None:
        given = os.environ.get(MULTIPROC_ENV)
        if given:
            # Values of an earlier run would be summed in: the directory starts empty.
            for stale in glob.glob(os.path.join(given, "*.db")):
                os.remove(stale)
        else:
            self._made = tempfile.mkdtemp(prefix="timers-metrics-")
            os.environ[MULTIPROC_ENV] = self._made
        # Metrics made from now on (in the pool processes) write to that directory.
        prometheus_client.values.ValueClass = prometheus_client.values.get_value_class()
        registry = CollectorRegistry()
        registry.register(PoolCollector())
        self._server = serve(self.port, registry)

    @staticmethod
    def process_stopped(pid: int) -> None:
        """A pool process is gone: drop its live gauges (its counters keep counting in the sum)."""
        if os.environ.get(MULTIPROC_ENV):
            prometheus_client.multiprocess.mark_process_dead(pid)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._made is not None:
            shutil.rmtree(self._made, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
            self._made = None
