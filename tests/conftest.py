"""Fixtures shared by every test layer: settings isolated from the developer's
environment, and a real Redis (flushed before and after) for integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

TEST_REDIS_URL = os.environ.get("SEEDQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads the developer's SEEDQ_* variables, OXEN_API_KEY or .env."""
    for name in list(os.environ):
        if name.startswith("SEEDQ_") and name != "SEEDQ_TEST_REDIS_URL" or name == "OXEN_API_KEY":
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
