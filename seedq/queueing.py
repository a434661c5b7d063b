"""Connections built from the settings: the Celery app's configuration and the Redis
client of the job store. Shared by the producer (which only sends) and the worker."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery
from kombu.entity import Queue

from seedq import contract
from seedq.broker import SCHEMES, TRANSPORT
from seedq.errors import ConfigError
from seedq.schedules import TASK_SCHEDULED_RUN
from seedq.settings import Settings

# Longer than any countdown the pipeline schedules (tracking re-checks are at most a
# few minutes apart), so a Redis broker never redelivers a message that is merely
# waiting for its ETA.
VISIBILITY_TIMEOUT_S = 6 * 60 * 60
EMBEDDED_BROKER = "memory://localhost/"
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


def celery_config(settings: Settings) -> dict[str, Any]:
    """Everything the producer and the workers must agree on."""
    broker_url = settings.broker_url or EMBEDDED_BROKER
    transport = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    return {
        "broker_url": broker_url,
        "broker_transport": broker_transport(broker_url),
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


def make_celery(settings: Settings, name: str = "seedq") -> Celery:
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def redis_client(settings: Settings) -> redis.Redis:
    """The job store's Redis: the configured server, else an in-process fakeredis."""
    if settings.redis_url:
        try:
            return redis.Redis.from_url(settings.redis_url, health_check_interval=30)
        except ValueError as exc:
            raise ConfigError(f"SEEDQ_REDIS_URL is not a Redis URL: {exc}") from None
    import fakeredis

    return fakeredis.FakeRedis()
