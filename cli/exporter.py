"""``seedq exporter``: serves the Prometheus gauges read from Redis (``seedq.gauges``):
the backlog, the jobs in flight and by state, spend, the throttles. It needs no worker,
so an autoscaler can scale workers from zero on the backlog it serves.

It starts only when Redis answers (else one line, exit 2 or 3, like every command);
after that a scrape that cannot reach Redis serves ``seedq_up 0`` and the process
stays up. Its Redis calls have a connect and read timeout of :data:`REDIS_TIMEOUT_S`,
so a Redis that hangs (accepts, never answers) costs a scrape that long and serves
``seedq_up 0``, within Prometheus's default scrape timeout (10 s). It listens on
127.0.0.1 unless told otherwise (``--address 0.0.0.0`` in a container, where the
compose file and the Kubernetes manifests say so).
"""

from __future__ import annotations

import signal
import threading

import typer
from prometheus_client import start_http_server

from cli.console import make_console
from seedq.errors import ConfigError
from seedq.gauges import (
    RECENT_RUNS,
    QueueCollector,
    ThrottleGauge,
    ThrottleStates,
    exporter_registry,
)
from seedq.queueing import redis_client
from seedq.settings import Settings, load_settings, require
from seedq.store import JobStore

err = make_console(stderr=True)
# redis-py's own default since 8.0 (None before it, which hung a scrape for good); said
# here so the exporter's promptness does not rest on a library default.
REDIS_TIMEOUT_S = 5.0


def exporter_command(
    port: int | None = typer.Option(
        None,
        "--port",
        min=0,
        max=65535,
        help="Port of /metrics (default SEEDQ_EXPORTER_PORT, 9464; 0: any free port).",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Address to listen on (default SEEDQ_EXPORTER_ADDRESS, 127.0.0.1; "
        "0.0.0.0 in a container).",
    ),
) -> None:
    """Serve Prometheus metrics read from Redis: backlog, jobs, spend, throttles."""
    settings = load_settings()
    require(settings, "seedq exporter", "redis_url")
    store = exporter_store(settings)
    store.queue_snapshot(RECENT_RUNS)  # Redis unreachable: one line and exit 3, now
    collector = QueueCollector(store, throttle_states(store, settings))
    bind = address or settings.exporter_address
    wanted = settings.exporter_port if port is None else port
    try:
        server, _thread = start_http_server(
            wanted, addr=bind, registry=exporter_registry(collector)
        )
    except OSError as exc:  # the port is taken, or the address is not this host's
        raise ConfigError(
            f"seedq exporter cannot listen on {bind}:{wanted}: {exc.strerror or exc}"
        ) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    err.print(f"serving metrics on http://{bind}:{server.server_address[1]}/metrics (Ctrl-C stops)")
    stop.wait()
    server.shutdown()


def exporter_store(settings: Settings) -> JobStore:
    """The store the scrapes read, on a Redis client that gives up on a hung server."""
    return JobStore(redis_client(settings, timeout_s=REDIS_TIMEOUT_S))


def throttle_states(store: JobStore, settings: Settings) -> ThrottleStates:
    """Reads the submit and poll throttles' state, as the workers build them."""
    from worker.runtime import poll_throttle, submit_throttle

    throttles = [submit_throttle(store, settings), poll_throttle(store, settings)]

    def read() -> list[ThrottleGauge]:
        states = [throttle.state() for throttle in throttles]
        return [
            ThrottleGauge(
                name=state["name"],
                effective_rate_per_s=state["effective_rate_per_s"],
                configured_rate_per_s=state["configured_rate_per_s"],
                breaker=state["breaker"],
            )
            for state in states
        ]

    return read
