"""The whole stack in one process, for ``seedq run`` with no configuration: an
in-memory broker, fakeredis for state, the provider simulator on a loopback port, and a
Celery worker in a thread running the very same tasks as production."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import fakeredis
from pydantic import SecretStr

from seedq.admission import admission_for
from seedq.queueing import make_celery
from seedq.settings import Settings
from seedq.store import JobStore

EMBEDDED_KEY = "embedded-simulator"
WORKER_THREADS = 8


@dataclass
class Stack:
    app: Any
    store: JobStore
    settings: Settings
    simulator_url: str


@contextmanager
def embedded_stack(
    settings: Settings, *, latency_s: tuple[float, float] = (1.0, 3.0)
) -> Iterator[Stack]:
    from celery.contrib.testing.worker import start_worker

    import worker.tasks  # noqa: F401 - registers the shared tasks on the embedded app
    from simulator.config import SimConfig
    from simulator.server import running_simulator
    from worker.events import listen
    from worker.inputs import LoopbackInputPublisher
    from worker.provider.client import OxenClient
    from worker.retry import RetryPolicy
    from worker.runtime import Runtime, install_runtime, poll_throttle, submit_throttle
    from worker.storage import make_storage
    from worker.ticker import run_ticker

    sim_config = SimConfig(latency_s=latency_s, max_concurrency=4, keepalive_s=1.0)
    with running_simulator(sim_config) as sim, LoopbackInputPublisher() as publisher:
        local = settings.model_copy(
            update={
                "provider_url": sim.url,
                "oxen_api_key": SecretStr(EMBEDDED_KEY),
                "allow_private_urls": True,
                "poll_interval_s": min(settings.poll_interval_s, 1.0),
                "retry_base_s": min(settings.retry_base_s, 0.5),
            }
        )
        store = JobStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
        runtime = Runtime(
            settings=local,
            store=store,
            provider=OxenClient.from_settings(local),
            storage=make_storage(local),
            publisher=publisher,
            policy=RetryPolicy.from_settings(local),
            admission=admission_for(store.redis, local),
            submit_throttle=submit_throttle(store, local),
            poll_throttle=poll_throttle(store, local),
        )
        install_runtime(runtime)
        app = make_celery(local)
        stop = threading.Event()
        threads = [
            threading.Thread(target=listen, args=(runtime, app, stop), name="seedq-events"),
            threading.Thread(
                target=run_ticker, args=(lambda: runtime, app, stop), name="seedq-ticker"
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
                yield Stack(app, store, local, sim.url)
        finally:
            stop.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join(timeout=10)
            install_runtime(None)
            runtime.provider.close()
