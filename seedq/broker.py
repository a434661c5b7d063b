"""kombu's Redis transport, with one Redis client per connection pool for its calls.

kombu makes a new ``redis.Redis`` for every publish, acknowledgement and QoS update
(``Channel.conn_or_acquire``), and redis-py builds its ~170-entry response-callback
table for every client it makes (redis/redis-py#3624). In a worker that was about a
seventh of all its CPU time, more than decoding the videos. A ``redis.Redis`` is only a
thread-safe view of its connection pool, so one per pool serves every such call:
connections still come from, and go back to, the same pool, and a pool kombu replaces
(after a fork or a reconnect) gets a new client.

It also tells its process of each message it takes from a queue (:func:`on_receipt`),
at the earliest moment there is: before kombu records the message unacked, and long
before Celery's ``task_received``. A process SIGKILLed between kombu's record and its
own would leave the message unacked in Redis, where only the visibility timeout (hours)
brings it back; told first, the process's heartbeat records it as held, and the tick
re-drives it within seconds of the death (``worker.heartbeat``).

It also tells its process of each message it hands back to its queue
(:func:`on_return`): those received and not acknowledged, restored as its channel
closes at a worker's shutdown, or rejected to be sent again. What a stopping worker
holds and was not told of as handed back is left for the tick to send again at once.

What that leaves is the instant between Redis handing a message out and the process's
record reaching Redis: a message lost there is in no queue, held by no process and not
unacked. :class:`BrokerView` reads what a Redis broker holds, so that after a worker's
death the tick can tell such a job (its message nowhere) from one whose message waits.

Chosen by :func:`seedq.queueing.celery_config` for ``redis://`` brokers (``rediss://``
keeps kombu's own transport, see :data:`SCHEMES`); the URL stays what it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)
# kombu's Redis transport keeps each queue as a list of that name and what consumers
# received and did not acknowledge in this hash (delivery tag -> [message, exchange,
# routing key]); both are its defaults, which seedq never changes.
UNACKED_KEY = "unacked"

TRANSPORT = "seedq.broker:Transport"
# Only plain redis://: for rediss:// kombu turns TLS on from the URL's scheme, which an
# explicit transport name would hide from it.
SCHEMES = frozenset({"redis"})


@dataclass(frozen=True, slots=True)
class Receipt:
    """A task message this process has just taken from its queue."""

    task_id: str
    task_name: str
    kwargs: dict[str, Any]
    eta_s: float  # when it is due (epoch seconds); 0: at once


ReceiptHook = Callable[[Receipt], None]
ReturnHook = Callable[[str], None]
_hook: tuple[ReceiptHook, frozenset[str]] | None = None
_return_hook: ReturnHook | None = None


def on_receipt(hook: ReceiptHook | None, task_names: Collection[str] = ()) -> None:
    """Call ``hook`` for each message of ``task_names`` this process takes from a
    queue, before kombu records it unacked (None: no longer). A hook that raises is
    logged, and the message goes on to Celery all the same."""
    global _hook
    _hook = None if hook is None else (hook, frozenset(task_names))


def on_return(hook: ReturnHook | None) -> None:
    """Call ``hook`` with the task id of each message this process hands back to its
    queue, once it is there (None: no longer). A hook that raises is logged."""
    global _return_hook
    _return_hook = hook


def receipt_of(message: Any) -> Receipt | None:
    """The task id, name, keyword arguments and ETA of a Celery (protocol 2) message;
    None for anything else."""
    headers = message.headers or {}
    task_id, task_name = headers.get("id"), headers.get("task")
    if not isinstance(task_id, str) or not isinstance(task_name, str):
        return None
    try:
        _args, kwargs, _embed = json.loads(message.body)
    except (TypeError, ValueError):  # not JSON, or not protocol 2's (args, kwargs, embed)
        return None
    eta = headers.get("eta")
    try:
        eta_s = datetime.fromisoformat(eta).timestamp() if isinstance(eta, str) else 0.0
    except ValueError:
        eta_s = 0.0
    return Receipt(task_id, task_name, kwargs if isinstance(kwargs, dict) else {}, eta_s)


def _tell(message: Any) -> None:
    hook = _hook
    if hook is None or (message.headers or {}).get("task") not in hook[1]:
        return
    try:
        receipt = receipt_of(message)
        if receipt is not None:
            hook[0](receipt)
    except Exception:  # Celery's own task_received is the next chance to record it
        log.exception("the receipt of a message could not be recorded")


def _tell_returned(message: Any) -> None:
    hook = _return_hook
    task_id = (message.headers or {}).get("id")
    if hook is None or not isinstance(task_id, str):
        return
    try:
        hook(task_id)
    except Exception:  # the message is back in its queue all the same
        log.exception("the return of message %s could not be recorded", task_id)


class QoS(kombu_redis.QoS):
    """kombu's unacked bookkeeping, with the process told of each message first, and
    of each it hands back."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        _tell(message)
        super().append(message, delivery_tag)  # type: ignore[no-untyped-call]

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        # Every way back to the queue comes here: the restore of a closing channel, a
        # reject with requeue, and the visibility timeout's restore of stale messages
        # (another process's, unknown to this one's deliveries, are not told of). Told
        # only once it is back: a restore that raised leaves the message held.
        message = self._delivered.get(tag)
        super().restore_by_tag(tag, client=client, leftmost=leftmost)  # type: ignore[no-untyped-call]
        if message is not None:
            _tell_returned(message)


class Channel(kombu_redis.Channel):
    """A channel whose synchronous calls share one client per pool, and whose QoS tells
    the process of each message it receives (:func:`on_receipt`)."""

    QoS = QoS

    _shared_client: redis.Redis | None = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the BRPOP/LISTEN clients are kombu's own, registered with its poller
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        client = self._shared_client
        if client is None or client.connection_pool is not pool:
            # Two threads may both make one here; either is as good, and one is kept.
            client = self._shared_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            # Closed after its connection was torn down (celery collects a lost broker
            # connection, then closes it): restoring unacked messages would read the URL
            # of a connection that is gone and raise AttributeError, which celery takes
            # for unrecoverable, and the worker exits. Said as what it is, a connection
            # error, celery reconnects; the messages stay unacked in Redis.
            raise redis.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


class BrokerView:
    """What a Redis broker holds of seedq's job messages: those waiting in its queues,
    and those received and not acknowledged (running, or waiting out an ETA)."""

    def __init__(self, client: redis.Redis, queues: Sequence[str]) -> None:
        self.redis = client
        self.queues = tuple(queues)

    def job_ids(self) -> set[str]:
        """The jobs some message in the broker names (its ``job_id`` argument), queued
        or received and not acknowledged."""
        return self._job_ids(unacked=True)

    def queued_job_ids(self) -> set[str]:
        """The jobs some message waiting in a queue names. The queues hold at most
        about the in-flight cap (admission sends no more), so reading them whole is
        cheap; it is done only after a worker died."""
        return self._job_ids(unacked=False)

    def _job_ids(self, *, unacked: bool) -> set[str]:
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.lrange(queue, 0, -1)
            if unacked:
                pipe.hvals(UNACKED_KEY)
            rows = pipe.execute()
        queued, received = (rows[:-1], rows[-1]) if unacked else (rows, [])
        payloads = [_loads(raw) for rows_of in queued for raw in rows_of]
        for raw in received:
            entry = _loads(raw)  # [message, exchange, routing key]
            payloads.append(entry[0] if isinstance(entry, list) and entry else None)
        return {job for job in map(_job_of, payloads) if job is not None}


def _loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _job_of(payload: Any) -> str | None:
    """The ``job_id`` keyword of one kombu message (protocol 2, JSON, as Celery sends
    it), or None for anything else."""
    if not isinstance(payload, dict):
        return None
    body = payload.get("body")
    if not isinstance(body, str):
        return None
    encoding = (payload.get("properties") or {}).get("body_encoding")
    try:
        text = base64.b64decode(body) if encoding == "base64" else body
        _args, kwargs, _embed = json.loads(text)
    except (binascii.Error, TypeError, ValueError):
        return None
    job = kwargs.get("job_id") if isinstance(kwargs, dict) else None
    return job if isinstance(job, str) else None
