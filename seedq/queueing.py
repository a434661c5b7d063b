"""Connections built from the settings: the Celery app's configuration and the Redis
client of the job store. Shared by the producer (which only sends) and the worker.

The broker URL comes from one place, :func:`broker_url`: ``SEEDQ_BROKER_URL``, or the
in-memory broker for an embedded run that asks for it. Nothing falls back to memory on
its own, since a worker or a producer on an in-memory broker of its own runs, sends and
reaches nobody. :func:`connection_error` says which service a connection error is about,
for the command line's exit status.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery
from kombu.entity import Queue
from kombu.exceptions import OperationalError

from seedq import contract
from seedq.broker import SCHEMES, TRANSPORT, BrokerView
from seedq.errors import ConfigError, SeedqError, ServiceUnavailable
from seedq.schedules import TASK_SCHEDULED_RUN
from seedq.settings import Settings

# Longer than any countdown the pipeline schedules (tracking re-checks are at most a
# few minutes apart), so a Redis broker never redelivers a message that is merely
# waiting for its ETA.
VISIBILITY_TIMEOUT_S = 6 * 60 * 60
EMBEDDED_BROKER = "memory://localhost/"
MAX_CAUSES = 8  # how far connection_error follows an exception's causes
# The one routing table: which queue each task is sent to (-Q of its worker service).
ROUTES = {
    contract.TASK_SUBMIT: contract.QUEUE_SUBMIT,
    contract.TASK_TRACK: contract.QUEUE_TRACK,
    contract.TASK_DELIVER: contract.QUEUE_DELIVER,
    TASK_SCHEDULED_RUN: contract.QUEUE_SUBMIT,
}


def queue_for(task: str) -> str:
    """The queue ``task`` is sent to; an unknown task goes to the default queue."""
    return ROUTES.get(task, contract.QUEUE_SUBMIT)


def broker_url(settings: Settings, *, embedded: bool = False) -> str:
    """The broker of every Celery app of seedq: the in-memory one for an ``embedded`` run
    (whatever is configured: the demo must reach no cluster), else ``SEEDQ_BROKER_URL``
    (ConfigError when unset)."""
    url = EMBEDDED_BROKER if embedded else settings.broker_url
    if url is None:
        raise ConfigError(
            "SEEDQ_BROKER_URL is not set: the workers, beat and the cluster's commands "
            "need the broker (redis://...)"
        )
    # Celery reads CELERY_BROKER_URL (which `celery -b` sets) over its configuration:
    # left alone, it would move this app to another broker than the one its peers use.
    other = os.environ.get("CELERY_BROKER_URL")
    if other and other != url:
        raise ConfigError(
            "CELERY_BROKER_URL (or celery -b) is set: seedq takes its broker from "
            "SEEDQ_BROKER_URL only; unset it"
        )
    return url


def celery_config(settings: Settings, *, embedded: bool = False) -> dict[str, Any]:
    """Everything the producer and the workers must agree on; ``embedded``: the
    in-process stack of ``seedq run`` (see :func:`broker_url`)."""
    url = broker_url(settings, embedded=embedded)
    transport = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    return {
        "broker_url": url,
        "broker_transport": broker_transport(url),
        "broker_transport_options": transport,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        # A task that ends in FAILURE is acknowledged (Celery's default, said here since
        # worker.tasks relies on it): its job or run already records the failure, and
        # a redelivery would only fail again. A lost worker's task is redelivered.
        "task_acks_on_failure": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": contract.QUEUE_SUBMIT,
        # Declared so that a plain `celery -A worker worker` consumes all three; -Q narrows.
        "task_queues": [
            Queue(name, routing_key=name)  # type: ignore[no-untyped-call]
            for name in contract.ALL_QUEUES
        ],
        "task_routes": {task: {"queue": queue} for task, queue in ROUTES.items()},
        **_beat(settings),
    }


def broker_transport(broker_url: str) -> str | None:
    """The kombu transport for ``broker_url``: seedq's for Redis (see seedq.broker),
    None (the URL's scheme decides) for anything else."""
    return TRANSPORT if urlsplit(broker_url).scheme in SCHEMES else None


def _beat(settings: Settings) -> dict[str, Any]:
    """Celery beat's entries, from SEEDQ_SCHEDULES when set (ConfigError when invalid)."""
    if settings.schedules is None:
        return {}
    from seedq.beat import beat_schedule

    return {"beat_schedule": beat_schedule(settings.schedules)}


def make_celery(settings: Settings, name: str = "seedq", *, embedded: bool = False) -> Celery:
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings, embedded=embedded))
    return app


def broker_view(settings: Settings) -> BrokerView | None:
    """What the configured Redis broker holds of seedq's queues; None for a broker that
    is not Redis (RabbitMQ gives a dead consumer's messages to another at once; the
    embedded one lives and dies with its process) or none configured."""
    url = settings.broker_url
    if url is None or urlsplit(url).scheme not in {"redis", "rediss"}:
        return None
    try:
        client = redis.Redis.from_url(url, health_check_interval=30)
    except ValueError:
        return None  # the workers' own connection says what is wrong with it
    return BrokerView(client, contract.ALL_QUEUES)


def redis_client(settings: Settings, *, timeout_s: float | None = None) -> redis.Redis:
    """The job store's Redis: the configured server, else an in-process fakeredis.

    ``timeout_s``: the connect and read timeout of each call, for a caller that must
    answer promptly whatever Redis does (the exporter's scrape); None: redis-py's
    default (5 s since redis-py 8.0, none before)."""
    if settings.redis_url:
        limits: dict[str, Any] = {}
        if timeout_s is not None:
            limits = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}
        try:
            return redis.Redis.from_url(settings.redis_url, health_check_interval=30, **limits)
        except ValueError as exc:
            raise ConfigError(f"SEEDQ_REDIS_URL is not a Redis URL: {exc}") from None
    import fakeredis

    return fakeredis.FakeRedis()


def connection_error(exc: BaseException) -> SeedqError | None:
    """A failed connection said as the project's own error, in one line: the service it
    could not reach (Redis, the broker) as a ServiceUnavailable, credentials refused as a
    ConfigError (waiting does not fix a wrong password); None for anything else. The
    exceptions ``exc`` was raised from count too: a library may wrap the refusal."""
    seen: BaseException | None = exc
    for _ in range(MAX_CAUSES):
        if seen is None:
            return None
        said = _said(seen)
        if said is not None:
            return said
        seen = seen.__cause__ or seen.__context__
    return None


def _said(exc: BaseException) -> SeedqError | None:
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return ConfigError(f"Redis refused the credentials in its URL: {_line(exc)}")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return ServiceUnavailable(f"Redis is unreachable (SEEDQ_REDIS_URL): {_line(exc)}")
    if isinstance(exc, redis.exceptions.OutOfMemoryError | redis.exceptions.ReadOnlyError):
        # Full under noeviction, or a replica: it answers, but takes no writes.
        return ServiceUnavailable(f"Redis refuses writes: {_line(exc)}")
    if isinstance(exc, OperationalError):
        return ServiceUnavailable(f"the broker is unreachable (SEEDQ_BROKER_URL): {_line(exc)}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return ServiceUnavailable(f"a service is unreachable: {_line(exc)}")
    return None


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
