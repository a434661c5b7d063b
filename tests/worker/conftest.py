"""Fixtures of the worker tests: S3 clients and fresh buckets on the shared moto server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import fakeredis
import pytest
import redis

from storage.s3 import make_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def s3_client(s3_server: str, s3_credentials: dict[str, str]) -> S3Client:
    """A client of the moto server; one attempt, so a failing test fails at once."""
    return make_client(s3_server, connect_timeout_s=2, read_timeout_s=10, max_attempts=1)


@pytest.fixture
def s3_bucket(s3_client: S3Client) -> str:
    """A new empty bucket: the server lives for the session, buckets do not."""
    name = f"seedq-test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["fake", "real"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The same test on fakeredis and on the real Redis (skipped when none answers)."""
    if request.param == "fake":
        yield fakeredis.FakeRedis(server=fakeredis.FakeServer())
    else:
        yield request.getfixturevalue("real_redis")
