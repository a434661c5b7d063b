"""seedq's Redis transport: one client per pool for kombu's calls, same messages."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from kombu.connection import Connection

from seedq.broker import TRANSPORT, Channel
from seedq.queueing import broker_transport, celery_config
from seedq.settings import Settings


def connect(url: str) -> Any:
    return Connection(url, transport=TRANSPORT)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("redis://127.0.0.1:6379/0", TRANSPORT),
        ("rediss://:pw@cache.example:6380/1", None),  # kombu's TLS comes from the scheme
        ("amqp://guest:guest@127.0.0.1:5672//", None),
        ("memory://localhost/", None),
        ("sentinel://127.0.0.1:26379", None),
    ],
)
def test_transport_by_scheme(url: str, transport: str | None) -> None:
    assert broker_transport(url) == transport
    assert celery_config(Settings(broker_url=url))["broker_transport"] == transport


def test_channel_shares_one_client_and_still_moves_messages(real_redis_url: str) -> None:
    with connect(real_redis_url) as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.connection_pool is channel.pool
        assert channel._create_client(asynchronous=True) is not first  # kombu's poller's own

        queue = conn.SimpleQueue("seedq-test-broker")
        try:
            queue.clear()
            for n in range(3):
                queue.put({"n": n})
            got = []
            for _ in range(3):
                message = queue.get(timeout=5)
                got.append(message.payload["n"])
                message.ack()
            assert got == [0, 1, 2]
        finally:
            queue.clear()
            queue.close()
        assert channel._create_client() is first  # publishes and acks reused it


def test_a_replaced_pool_gets_a_new_client(real_redis_url: str) -> None:
    with connect(real_redis_url) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        channel._disconnect_pools()  # what kombu does after a fork or on close
        second = channel._create_client()
        assert second is not first and second.connection_pool is channel.pool


def test_closing_a_channel_whose_connection_is_gone_is_a_connection_error(
    real_redis: redis.Redis, real_redis_url: str
) -> None:
    """celery collects a lost broker connection (its transport forgets the connection),
    then closes it. With a message received and not acknowledged, kombu's close read
    the gone connection's URL and raised AttributeError, which celery takes for
    unrecoverable: workers exited after a Redis restart (tests/e2e/test_chaos.py)."""
    conn = connect(real_redis_url)
    queue = conn.SimpleQueue("seedq-test-broker-gone")
    queue.put({"n": 1})
    queue.get(timeout=5)  # received, not acknowledged
    channel = conn.default_channel
    conn.transport.client = None  # what Connection.collect() leaves
    with pytest.raises(redis.ConnectionError):
        channel.close()
    conn.maybe_close_channel(channel)  # celery's cleanup ignores connection errors
    assert real_redis.hlen("unacked") == 1  # the message is kept, not lost


def test_a_rediss_broker_keeps_tls() -> None:
    from celery import Celery

    app = Celery(set_as_current=False)
    app.conf.update(celery_config(Settings(broker_url="rediss://:pw@cache.example:6380/1")))
    with app.connection_for_write() as conn:
        assert conn.ssl, "TLS must stay on for rediss://"


def test_a_received_message_is_told_before_kombu_records_it_unacked(
    real_redis: redis.Redis, real_redis_url: str
) -> None:
    """A worker killed between kombu's unacked record and its own record of the message
    would leave the job to the visibility timeout (hours): the process is told first."""
    from datetime import UTC, datetime, timedelta

    from celery import Celery

    from seedq import broker

    told: list[tuple[broker.Receipt, bool]] = []

    def hook(receipt: broker.Receipt) -> None:
        told.append((receipt, bool(real_redis.hlen("unacked"))))

    app = Celery("seedq-test-receipt")
    app.conf.update(celery_config(Settings(broker_url=real_redis_url)))
    eta = datetime.now(UTC) + timedelta(minutes=5)
    queue_name = "seedq-test-receipt"
    broker.on_receipt(hook, {"seedq.deliver"})
    try:
        app.send_task("seedq.other", kwargs={"job_id": "not-told"}, queue=queue_name)
        sent = app.send_task(
            "seedq.deliver", kwargs={"run_id": "r", "job_id": "j-1"}, queue=queue_name, eta=eta
        )
        with connect(real_redis_url) as conn:
            queue = conn.SimpleQueue(queue_name)
            try:
                for _ in range(2):
                    queue.get(timeout=5).ack()
            finally:
                queue.close()
    finally:
        broker.on_receipt(None)
    assert len(told) == 1
    receipt, unacked_already = told[0]
    assert not unacked_already
    assert (receipt.task_id, receipt.task_name) == (sent.id, "seedq.deliver")
    assert receipt.kwargs == {"run_id": "r", "job_id": "j-1"}
    assert receipt.eta_s == pytest.approx(eta.timestamp(), abs=0.01)


def test_a_hook_that_fails_loses_no_message(real_redis_url: str) -> None:
    from seedq import broker

    def hook(receipt: broker.Receipt) -> None:
        raise RuntimeError("the store is away")

    broker.on_receipt(hook, {"seedq.track"})
    try:
        with connect(real_redis_url) as conn:
            queue = conn.SimpleQueue("seedq-test-receipt-fails")
            try:
                queue.put({"x": 1}, headers={"id": "t-1", "task": "seedq.track"})
                message = queue.get(timeout=5)
                assert message.payload == {"x": 1}
                message.ack()
            finally:
                queue.close()
    finally:
        broker.on_receipt(None)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"not json", {"id": "t", "task": "seedq.track"}),
        (b'{"a": 1}', {"id": "t", "task": "seedq.track"}),
        (b"[[], {}, {}]", {"task": "seedq.track"}),
    ],
)
def test_receipt_of_anything_but_a_celery_message_is_none(
    body: bytes, headers: dict[str, str]
) -> None:
    from types import SimpleNamespace

    from seedq.broker import receipt_of

    assert receipt_of(SimpleNamespace(body=body, headers=headers)) is None


def test_the_broker_view_names_the_jobs_of_queued_and_unacked_messages(
    real_redis: redis.Redis, real_redis_url: str
) -> None:
    from celery import Celery

    from seedq import contract
    from seedq.broker import UNACKED_KEY, BrokerView
    from seedq.queueing import broker_view

    app = Celery("seedq-test-view")
    app.conf.update(celery_config(Settings(broker_url=real_redis_url)))
    for job_id, queue in (("a", contract.QUEUE_SUBMIT), ("b", contract.QUEUE_DELIVER)):
        app.send_task(queue, kwargs={"run_id": "r", "job_id": job_id}, queue=queue)
    app.send_task(contract.QUEUE_TRACK, kwargs={"run_id": "r", "job_id": "c"}, countdown=60)
    real_redis.rpush(contract.QUEUE_SUBMIT, b"not json", b'{"body": "%%%"}')
    view = broker_view(Settings(broker_url=real_redis_url))
    assert isinstance(view, BrokerView)
    with connect(real_redis_url) as conn:  # a worker takes c's message and has it in hand
        queue = conn.SimpleQueue(contract.QUEUE_TRACK)
        try:
            queue.get(timeout=5)  # not acknowledged
            assert real_redis.llen(contract.QUEUE_TRACK) == 0
            assert real_redis.hlen(UNACKED_KEY) == 1
            assert view.job_ids() == {"a", "b", "c"}
            assert view.queued_job_ids() == {"a", "b"}
        finally:
            queue.close()


@pytest.mark.parametrize(
    "url", [None, "amqp://guest:guest@127.0.0.1:5672//", "memory://localhost/"]
)
def test_no_broker_view_where_the_broker_is_not_redis(url: str | None) -> None:
    from seedq.queueing import broker_view

    assert broker_view(Settings(broker_url=url)) is None


def test_messages_handed_back_are_told_once_back_in_their_queue(
    real_redis: redis.Redis, real_redis_url: str
) -> None:
    """A worker's shutdown restores what it received and did not finish; told of each,
    its heartbeat stops holding them (what it is not told of is sent again by the tick)."""
    from seedq import broker

    told: list[tuple[str, int]] = []
    queue_name = "seedq-test-return"

    def hook(task_id: str) -> None:
        told.append((task_id, int(real_redis.llen(queue_name))))

    broker.on_return(hook)
    try:
        with connect(real_redis_url) as conn:
            queue = conn.SimpleQueue(queue_name)
            for n in range(3):
                queue.put({"n": n}, headers={"id": f"t-{n}", "task": "seedq.deliver"})
            rejected, kept, acked = (queue.get(timeout=5) for _ in range(3))
            acked.ack()
            rejected.reject(requeue=True)
            assert told == [("t-0", 1)]
            assert kept.payload == {"n": 1}
            queue.close()  # the channel closes: kombu restores what it did not ack
        assert told == [("t-0", 1), ("t-1", 2)]
        assert real_redis.hlen(broker.UNACKED_KEY) == 0
    finally:
        broker.on_return(None)
        real_redis.delete(queue_name)
