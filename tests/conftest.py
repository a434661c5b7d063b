"""Fixtures shared by every test layer: settings isolated from the developer's
environment, a real Redis (flushed before and after) for integration tests, and a real
S3-protocol server (moto) with fake credentials. Under pytest-xdist each worker has a
Redis database of its own (``worker_redis_url``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis


def worker_redis_url(base_url: str, worker: str | None) -> str:
    """The database of one pytest-xdist worker: ``gwN`` takes the base URL's database
    minus N (the default base, 15, is the last of Redis's 16), so parallel workers never
    flush each other's data; without xdist, the base itself."""
    if not worker:
        return base_url
    parts = urlsplit(base_url)
    base = int(parts.path.strip("/") or 0)
    db = base - int(worker.removeprefix("gw"))
    if db < 0:
        raise pytest.UsageError(
            f"SEEDQ_TEST_REDIS_URL {base_url}: xdist worker {worker} would need database "
            f"{db}; give a base database of at least the number of workers minus one"
        )
    return parts._replace(path=f"/{db}").geturl()


def pytest_configure(config: pytest.Config) -> None:
    """Refuse, before any worker starts, more xdist workers than databases below the base."""
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers > 1:
        worker_redis_url(_BASE_URL, f"gw{workers - 1}")


_BASE_URL = os.environ.get("SEEDQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_REDIS_URL = worker_redis_url(_BASE_URL, os.environ.get("PYTEST_XDIST_WORKER"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # A worker starts with COLUMNS=80 and LINES=24, which the CLI's Rich consoles (made
    # at import) would keep for good, whatever width a test asks for: as in one process.
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test reads the developer's SEEDQ_* variables, OXEN_API_KEY or .env."""
    for name in list(os.environ):
        if (name.startswith("SEEDQ_") and name != "SEEDQ_TEST_REDIS_URL") or name == "OXEN_API_KEY":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def real_redis() -> Iterator[redis.Redis]:
    """A real Redis database, flushed before and after; skips when none is reachable."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {TEST_REDIS_URL}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def real_redis_url(real_redis: redis.Redis) -> str:
    """The URL of the ``real_redis`` database (flushed before and after, like it)."""
    return TEST_REDIS_URL


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-protocol server (moto, in a thread) on loopback; yields its endpoint URL.

    State lives as long as the session: tests create their own uniquely named buckets.
    Clients need credentials in the environment: use ``s3_credentials`` with it.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-access-key",
    "AWS_SESSION_TOKEN": "testing-session-token",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Fake AWS credentials in the environment, and no developer profile or config file
    that could point boto3 at a real account."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in S3_TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return dict(S3_TEST_CREDENTIALS)
