"""Prometheus metrics of the workers, served on ``SEEDQ_METRICS_PORT`` (0: off).

Two kinds:

- **Observed in the process**: provider call latency by endpoint (around every
  throttled provider call, ``worker.throttle.reported``), limiter waits (where
  ``worker.throttle.wait_turn`` gets a wait). With several processes per host (prefork
  pool, several workers), give each worker its own port, or set
  ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, the same for every process of the
  host, set before they start): the server then reports every process's values.
- **Read from Redis at scrape time** (cheap aggregates, one pipeline): jobs by state
  summed over the most recent runs' counters, generations in flight, spend and
  reservations summed over those runs' budgets. Every worker reports the same values for
  these: aggregate them with ``max``, not ``sum``.

Metric objects are made at import time (no I/O); nothing is served until
:func:`start_metrics_server`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from seedq.store import JobStore

log = logging.getLogger(__name__)
RECENT_RUNS = 1000  # the aggregates cover this many most recent runs

PROVIDER_CALL_SECONDS = Histogram(
    "seedq_provider_call_seconds",
    "Latency of provider API calls, by endpoint and outcome.",
    ["endpoint", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=None,
)
LIMITER_WAITS = Counter(
    "seedq_limiter_waits",
    "Times a caller had to wait for a global rate limiter, by limiter.",
    ["limiter"],
    registry=None,
)
LIMITER_WAIT_SECONDS = Histogram(
    "seedq_limiter_wait_seconds",
    "Waits imposed by the global rate limiters, by limiter.",
    ["limiter"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 15, 60, 300),
    registry=None,
)
IN_PROCESS = (PROVIDER_CALL_SECONDS, LIMITER_WAITS, LIMITER_WAIT_SECONDS)


def observe_call(endpoint: str, seconds: float, ok: bool) -> None:
    PROVIDER_CALL_SECONDS.labels(endpoint, "ok" if ok else "error").observe(seconds)


def observe_wait(limiter: str, seconds: float) -> None:
    if seconds > 0:
        LIMITER_WAITS.labels(limiter).inc()
        LIMITER_WAIT_SECONDS.labels(limiter).observe(seconds)


class StoreCollector(Collector):
    """Jobs by state, generations in flight and spend, read from Redis on each scrape."""

    def __init__(self, client: Callable[[], redis.Redis]) -> None:
        self._client = client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        totals = JobStore(self._client()).recent_totals(RECENT_RUNS)
        states, money = totals.states, totals.money
        jobs = GaugeMetricFamily(
            "seedq_jobs", "Jobs by state, over the most recent runs.", labels=["state"]
        )
        for state, n in sorted(states.items()):
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily(
            "seedq_in_flight", "Generations queued or processing at the provider.", totals.in_flight
        )
        spend = GaugeMetricFamily(
            "seedq_spend",
            "Money spent (charged) and reserved by admitted jobs, over the most recent runs.",
            labels=["kind"],
        )
        for kind, amount in money.items():
            spend.add_metric([kind], amount)
        yield spend


def metrics_registry(client: Callable[[], redis.Redis]) -> CollectorRegistry:
    """The registry a worker serves: this process's (or, in multiprocess mode, every
    process's) observations, plus the store's aggregates."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in IN_PROCESS:
            registry.register(metric)
    registry.register(StoreCollector(client))
    return registry


def start_metrics_server(port: int, client: Callable[[], redis.Redis], addr: str = "") -> Any:
    """Serve ``/metrics`` on ``port`` in a daemon thread; returns the server (``shutdown``)."""
    # bandit B104: scraped from other hosts (Prometheus on the Compose network), and off
    # unless SEEDQ_METRICS_PORT is set.
    bind = addr or "0.0.0.0"  # noqa: S104  # nosec B104
    server, _thread = start_http_server(port, addr=bind, registry=metrics_registry(client))
    log.info("metrics on port %d", server.server_address[1])
    return server
