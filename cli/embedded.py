"""The whole stack in one process, for ``seedq run`` with no broker configured: a Celery
worker in threads running the very same tasks as production, the events listener and
the ticker, on Celery's in-memory broker. Two flavours:

- :func:`embedded_stack`, the demo (no ``OXEN_API_KEY``): fakeredis for state and the
  provider simulator on a loopback port; nothing is paid, nothing outlives the process.
- :func:`local_stack`, a paid run on one machine (``OXEN_API_KEY`` set): the configured
  provider, and the state in a private, append-only ``redis-server`` under
  ``DIR/.seedq/`` (:mod:`cli.localredis`), so a crash loses nothing.

Why the in-memory broker is enough for the paid run: a message only ever carries ids,
and every job that a message could be about is also in the durable store with a lease.
An admitted job holds a slot lease from before its submit message is sent until its
generation leaves the provider; a generated job holds a delivery lease until delivered;
a registered job waits in its run's queue. When messages die with the process, the next
run's tick finds those leases expired and sends each job's current step again (submit
for ``registered``/``submitting``, which reconciles an enqueue that may have been sent
instead of sending it again; track for ``submitted``, delivery for ``generated``), and
every step is a compare-and-set. The only cost of a crash is time, and even that is cut:
the private store's lock proves its old workers dead, so their leases are made due at
start (:meth:`seedq.admission.Admission.expire_all`) instead of running out.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fakeredis
from pydantic import SecretStr

from seedq.admission import admission_for
from seedq.logs import Redactor, log_secrets
from seedq.queueing import make_celery
from seedq.settings import Settings
from seedq.store import JobStore

if TYPE_CHECKING:
    from worker.runtime import Runtime

EMBEDDED_KEY = "embedded-simulator"
WORKER_THREADS = 8


@dataclass
class Stack:
    app: Any
    store: JobStore
    settings: Settings
    provider_url: str
    redriven: int = 0  # leases of a killed run made due at start (local_stack only)


@contextmanager
def embedded_stack(
    settings: Settings, *, latency_s: tuple[float, float] = (1.0, 3.0)
) -> Iterator[Stack]:
    """The demo: the simulator stands in for the provider, fakeredis for Redis."""
    from simulator.config import SimConfig
    from simulator.server import running_simulator
    from worker.inputs import LoopbackInputPublisher

    sim_config = SimConfig(latency_s=latency_s, max_concurrency=4, keepalive_s=1.0)
    with running_simulator(sim_config) as sim, LoopbackInputPublisher() as publisher:
        local = settings.model_copy(
            update={
                "provider_url": sim.url,
                "oxen_api_key": SecretStr(EMBEDDED_KEY),
                # The fetch guard off entirely (SEEDQ_ALLOW_PRIVATE_URLS): the simulator
                # is on loopback. Only this demo does it, never a paid run.
                "allow_private_urls": True,
                "poll_interval_s": min(settings.poll_interval_s, 1.0),
                "retry_base_s": min(settings.retry_base_s, 0.5),
            }
        )
        store = JobStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
        runtime = _runtime(local, store, publisher)
        with _serving(runtime) as app:
            yield Stack(app, store, local, sim.url)


@contextmanager
def local_stack(settings: Settings, root: Path) -> Iterator[Stack]:
    """A paid run on this machine: the configured provider, durable state in
    ``root/.seedq`` (the output folder, or the current one for an S3 output).

    Raises :class:`~seedq.errors.LocalStoreError` when no ``redis-server`` is installed
    or another run holds ``root``; then nothing has been sent."""
    from cli.localredis import private_redis
    from worker.inputs import make_publisher

    with private_redis(root) as client:
        store = JobStore(client, Redactor(log_secrets(settings, os.environ)))
        redriven = admission_for(store, settings).leases.expire_all()
        publisher = make_publisher(settings)
        try:
            runtime = _runtime(settings, store, publisher, live_catalog=True)
            with _serving(runtime) as app:
                yield Stack(app, store, settings, settings.provider_url, redriven)
        finally:
            close = getattr(publisher, "close", None)
            if close is not None:
                close()


def _runtime(
    settings: Settings, store: JobStore, publisher: Any, *, live_catalog: bool = False
) -> Runtime:
    from provider.catalog import catalog_for
    from provider.client import OxenClient
    from seedq.catalog import ModelCatalog
    from storage import make_storage
    from worker.retry import RetryPolicy
    from worker.runtime import Runtime, poll_throttle, submit_throttle

    return Runtime(
        settings=settings,
        store=store,
        provider=OxenClient.from_settings(settings),
        storage=make_storage(settings),
        publisher=publisher,
        policy=RetryPolicy.from_settings(settings),
        admission=admission_for(store, settings),
        submit_throttle=submit_throttle(store, settings),
        poll_throttle=poll_throttle(store, settings),
        # A paid run prices deliveries with the provider's live object, as a worker does.
        catalog=catalog_for(settings) if live_catalog else ModelCatalog(),
    )


@contextmanager
def _serving(runtime: Runtime) -> Iterator[Any]:
    """The worker threads, the events listener and the ticker around ``runtime``."""
    from celery.contrib.testing.worker import start_worker

    import worker.tasks  # noqa: F401 - registers the shared tasks on the embedded app
    from seedq.dispatch import celery_sender
    from worker.events import listen
    from worker.runtime import install_runtime
    from worker.ticker import run_ticker

    install_runtime(runtime)
    app = make_celery(runtime.settings, embedded=True)
    send = celery_sender(app)
    stop = threading.Event()
    threads = [
        # Closures, not Thread(args=...), so mypy checks each call against its types.
        threading.Thread(target=lambda: listen(runtime, send, stop), name="seedq-events"),
        threading.Thread(
            target=lambda: run_ticker(lambda: runtime, send, stop), name="seedq-ticker"
        ),
    ]
    logging.getLogger("celery").setLevel(logging.WARNING)
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=WORKER_THREADS,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30.0,
        ):
            for thread in threads:
                thread.daemon = True
                thread.start()
            yield app
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=10)
        install_runtime(None)
        runtime.provider.close()
