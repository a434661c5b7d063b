"""Prometheus metrics of the workers, served on ``SEEDQ_METRICS_PORT`` (0: off): what
each process observes itself, around its calls.

- provider call latency by endpoint (around every throttled provider call,
  ``worker.throttled_calls.reported``);
- limiter waits (where ``worker.throttled_calls.wait_turn`` gets a wait).

With several processes per host (prefork pool, several workers), give each worker its
own port, or set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, the same for every
process of the host, set before they start): the server then reports every process's
values.

The gauges read from Redis (backlog, jobs by state, in flight, spend, throttle state)
live in ``seedq exporter`` now (``seedq/gauges.py``, ``cli/exporter.py``): one process
that needs no worker serves them, so an autoscaler can start workers from zero, and
workers no longer read Redis for each scrape.

Metric objects are made at import time (no I/O); nothing is served until
:func:`start_metrics_server`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

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


def metrics_registry() -> CollectorRegistry:
    """The registry a worker serves: this process's (or, in multiprocess mode, every
    process's) observations."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in IN_PROCESS:
            registry.register(metric)
    return registry


def start_metrics_server(port: int, addr: str = "") -> Any:
    """Serve ``/metrics`` on ``port`` in a daemon thread; returns the server (``shutdown``)."""
    # bandit B104: scraped from other hosts (Prometheus on the Compose network), and off
    # unless SEEDQ_METRICS_PORT is set.
    bind = addr or "0.0.0.0"  # noqa: S104  # nosec B104
    server, _thread = start_http_server(port, addr=bind, registry=metrics_registry())
    log.info("metrics on port %d", server.server_address[1])
    return server
