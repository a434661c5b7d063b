"""Everything a task needs, built once per worker process from the settings.

Tasks never build clients themselves: they ask :func:`get_runtime`, which builds a
:class:`Runtime` on first use in each process (after a prefork worker forks, never at
import time). The embedded ``seedq run`` installs its own with :func:`install_runtime`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from provider.catalog import catalog_for
from provider.client import OxenClient
from provider.protocol import Provider
from seedq.admission import Admission, admission_for
from seedq.broker import BrokerView
from seedq.catalog import ModelCatalog
from seedq.leases import Leases
from seedq.logs import Redactor, log_secrets
from seedq.queueing import broker_view, redis_client
from seedq.settings import Settings, load_settings
from seedq.store import JobStore
from storage.base import Storage
from worker.inputs import InputPublisher
from worker.retry import RetryPolicy
from worker.throttle import Throttle


@dataclass
class Runtime:
    settings: Settings
    store: JobStore
    provider: Provider
    storage: Storage
    publisher: InputPublisher
    policy: RetryPolicy
    admission: Admission
    submit_throttle: Throttle
    poll_throttle: Throttle
    catalog: ModelCatalog = field(default_factory=ModelCatalog)
    clock: Any = time.time  # injectable so tests control time
    broker: BrokerView | None = None  # what a Redis broker holds; None: another broker

    def now(self) -> float:
        return float(self.clock())

    @property
    def leases(self) -> Leases:
        """The slot and delivery leases, kept by admission (which takes the slots)."""
        return self.admission.leases


def build_runtime(settings: Settings) -> Runtime:
    from storage import make_storage
    from worker.inputs import make_publisher

    # The error texts it stores lose the worker's own secrets too, not only URL credentials.
    store = JobStore(redis_client(settings), Redactor(log_secrets(settings, os.environ)))
    return Runtime(
        settings=settings,
        store=store,
        provider=OxenClient.from_settings(settings),
        storage=make_storage(settings),
        publisher=make_publisher(settings),
        policy=RetryPolicy.from_settings(settings),
        admission=admission_for(store, settings),
        submit_throttle=submit_throttle(store, settings),
        poll_throttle=poll_throttle(store, settings),
        # The provider's live prices, as the producer estimated with (shipped copy when
        # the live object cannot be used); fetched once per model per process.
        catalog=catalog_for(settings),
        broker=broker_view(settings),
    )


def submit_throttle(store: JobStore, settings: Settings) -> Throttle:
    """The global budget of enqueue calls."""
    return Throttle.from_spec(
        store.redis, "submit", settings.submit_rate, settings.submit_burst, **_breaker(settings)
    )


def poll_throttle(store: JobStore, settings: Settings) -> Throttle:
    """The global budget of status and list calls."""
    return Throttle.from_spec(store.redis, "poll", settings.poll_rate, **_breaker(settings))


def _breaker(settings: Settings) -> dict[str, Any]:
    return {
        "failure_threshold": settings.breaker_threshold,
        "cooldown_s": settings.breaker_cooldown_s,
    }


_lock = threading.Lock()
_runtime: Runtime | None = None
_pid: int | None = None


def install_runtime(runtime: Runtime | None) -> None:
    """Use this runtime in this process (embedded runs, tests); None forgets it."""
    global _runtime, _pid
    with _lock:
        _runtime, _pid = runtime, os.getpid() if runtime else None


def get_runtime() -> Runtime:
    global _runtime, _pid
    with _lock:
        if _runtime is None or _pid != os.getpid():
            _runtime, _pid = build_runtime(load_settings()), os.getpid()
        return _runtime
