"""The pipeline on real parts: a real Redis (or RabbitMQ) broker, real `celery worker`
processes, the simulator over HTTP, and moto's S3 server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from PIL import Image

from simulator.config import SimConfig
from simulator.server import SimHandle, running_simulator

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-e2e-very-secret-key-0123456789"
AMQP_URL = os.environ.get("SEEDQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Cluster:
    """Everything a test needs to run seedq as an operator would."""

    env: dict[str, str]
    sim: SimHandle
    store: redis.Redis
    bucket: str
    s3: Any
    folder: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def seedq(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "seedq.cli", *args],
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def seedq_background(self, *args: str) -> subprocess.Popen[str]:
        """``seedq ARGS`` left running, output captured (read it with communicate())."""
        return subprocess.Popen(
            [sys.executable, "-m", "seedq.cli", *args],
            env=self.env,
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def start_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "-l",
                "INFO",
                "-P",
                "threads",
                "-c",
                "4",
                "-n",
                f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}@%h",
                "--without-mingle",
                "--without-gossip",
                *extra,
            ],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.folder.glob("worker-*.log"))
        )

    def objects(self) -> dict[str, int]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="out/")
        return {o["Key"]: o["Size"] for o in listed.get("Contents", [])}

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.workers:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def write_manifest(folder: Path, rows: list[dict[str, str]]) -> Path:
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for name, colour in (
        ("red.png", (200, 40, 40)),
        ("blue.jpg", (40, 40, 200)),
        ("face-photo.png", (220, 180, 160)),
    ):
        Image.new("RGB", (320, 240), colour).save(images / name)
    fields = sorted({k for row in rows for k in row})
    lines = [",".join(fields)] + [",".join(row.get(f, "") for f in fields) for row in rows]
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest, real_redis_url: str) -> str:
    if request.param == "rabbitmq":
        if not listening("127.0.0.1", 5672):
            pytest.skip("no RabbitMQ on 127.0.0.1:5672")
        return AMQP_URL
    return real_redis_url


ClusterFactory = Callable[..., Cluster]


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
        **sim: Any,
    ) -> Cluster:
        """A cluster; ``env`` adds to (or overrides) the workers' and commands' environment."""
        redis_url = real_redis_url
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
        c = Cluster(environ, handle, real_redis, bucket, s3, tmp_path)
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
