"""The pipeline on real parts: a real Redis (or RabbitMQ) broker, real `celery worker`
processes, the simulator over HTTP, and moto's S3 server; for chaos tests, a dedicated
append-only Redis that can be killed and restarted, and a TCP proxy that can cut S3 off.
The fixtures only: the helpers they hold are in cluster.py and processes.py."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from simulator.config import SimConfig
from simulator.server import running_simulator
from tests.e2e.cluster import API_KEY, Cluster, ClusterFactory, write_manifest
from tests.e2e.processes import REPO, RedisProcess, TcpProxy, listening

AMQP_URL = os.environ.get("SEEDQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest, real_redis_url: str) -> str:
    if request.param == "rabbitmq":
        if not listening("127.0.0.1", 5672):
            pytest.skip("no RabbitMQ on 127.0.0.1:5672")
        return AMQP_URL
    return real_redis_url


@pytest.fixture
def cluster(
    tmp_path: Path,
    real_redis: redis.Redis,
    real_redis_url: str,
    s3_server: str,
    s3_credentials: dict[str, str],
) -> Iterator[ClusterFactory]:
    made: list[Cluster] = []
    stack: list[Any] = []

    def make(
        broker: str | None = None,
        *,
        workers: int = 2,
        env: dict[str, str] | None = None,
        redis_url: str | None = None,
        **sim: Any,
    ) -> Cluster:
        """A cluster; ``env`` adds to (or overrides) the workers' and commands' environment;
        ``redis_url`` replaces the shared test Redis as broker and store."""
        store = real_redis
        if redis_url is None:
            redis_url = real_redis_url
        else:
            store = redis.Redis.from_url(redis_url)
        config = SimConfig(
            **{"latency_s": (0.3, 0.8), "max_concurrency": 8, "seed": 7, "keepalive_s": 1.0, **sim}
        )
        ctx = running_simulator(config)
        handle = ctx.__enter__()
        stack.append(ctx)
        bucket = f"seedq-e2e-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", endpoint_url=s3_server)
        s3.create_bucket(Bucket=bucket)
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SEEDQ_")},
            **s3_credentials,
            "SEEDQ_BROKER_URL": broker or redis_url,
            "SEEDQ_REDIS_URL": redis_url,
            "SEEDQ_PROVIDER_URL": handle.url,
            "OXEN_API_KEY": API_KEY,
            "SEEDQ_OUTPUT": f"s3://{bucket}/out",
            "SEEDQ_S3_ENDPOINT_URL": s3_server,
            "SEEDQ_POLL_INTERVAL_S": "0.3",
            "SEEDQ_ALLOW_PRIVATE_URLS": "true",
            "SEEDQ_RETRY_BASE_S": "0.2",
            "SEEDQ_RETRY_MAX_DELAY_S": "1",
            "SEEDQ_HTTP_TIMEOUT_S": "2",
            "SEEDQ_RECONCILE_GRACE_S": "3",
            "SEEDQ_BREAKER_COOLDOWN_S": "2",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        c = Cluster(environ, handle, store, bucket, s3, tmp_path)
        for _ in range(workers):
            c.start_worker()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@pytest.fixture
def manifest() -> Callable[[Path, list[dict[str, str]]], Path]:
    return write_manifest


@pytest.fixture
def no_config_env() -> dict[str, str]:
    """This process's environment without any seedq setting: what a new user has."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("SEEDQ_") and k != "OXEN_API_KEY"
    }


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A started :class:`RedisProcess` of this test's own (never the shared Redis)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisProcess(folder)
    server.start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def s3_proxy(s3_server: str) -> Iterator[TcpProxy]:
    """A :class:`TcpProxy` in front of the S3 server, up."""
    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    proxy.up()
    yield proxy
    proxy.down()
