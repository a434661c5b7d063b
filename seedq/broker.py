"""kombu's Redis transport, with one Redis client per connection pool for its calls.

kombu makes a new ``redis.Redis`` for every publish, acknowledgement and QoS update
(``Channel.conn_or_acquire``), and redis-py builds its ~170-entry response-callback
table for every client it makes (redis/redis-py#3624). In a worker that was about a
seventh of all its CPU time, more than decoding the videos. A ``redis.Redis`` is only a
thread-safe view of its connection pool, so one per pool serves every such call:
connections still come from, and go back to, the same pool, and a pool kombu replaces
(after a fork or a reconnect) gets a new client.

Chosen by :func:`seedq.queueing.celery_config` for ``redis://`` brokers (``rediss://``
keeps kombu's own transport, see :data:`SCHEMES`); the URL stays what it is.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

TRANSPORT = "seedq.broker:Transport"
# Only plain redis://: for rediss:// kombu turns TLS on from the URL's scheme, which an
# explicit transport name would hide from it.
SCHEMES = frozenset({"redis"})


class Channel(kombu_redis.Channel):
    """A channel whose synchronous calls share one client per pool."""

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
