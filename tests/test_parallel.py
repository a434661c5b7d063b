"""The test suite's own parallelism: each pytest-xdist worker flushes a Redis database
of its own, below the base one, never another worker's."""

from __future__ import annotations

import pytest

from tests.conftest import worker_redis_url


def test_without_xdist_the_base_database_is_used() -> None:
    assert worker_redis_url("redis://127.0.0.1:6379/15", None) == "redis://127.0.0.1:6379/15"


def test_each_worker_counts_down_from_the_base() -> None:
    urls = [worker_redis_url("redis://:pw@127.0.0.1:6379/15", f"gw{n}") for n in range(4)]
    assert urls == [f"redis://:pw@127.0.0.1:6379/{db}" for db in (15, 14, 13, 12)]


def test_a_worker_below_database_0_is_refused_with_the_reason() -> None:
    with pytest.raises(pytest.UsageError, match="gw3 would need database -1"):
        worker_redis_url("redis://127.0.0.1:6379/2", "gw3")
