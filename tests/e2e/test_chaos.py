"""Chaos end to end: a few dozen jobs through real `celery worker` processes, a real
Redis, the simulator over HTTP and moto's S3 server while things break: workers killed
with SIGKILL mid-submit and mid-delivery, Redis killed and restarted (append-only file),
a provider answering 5xx, 429, slow and dropped answers and failing generations, and
the S3 endpoint cut off for a while.

Each test ends with the same audit (``assert_every_job_accounted``): every job
delivered or failed with a reason, none lost or stuck, no duplicate enqueue, one
recorded generation per enqueue, and every delivered video in S3 once, decodable and
matching its request.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.conftest import RedisProcess, TcpProxy, assert_every_job_accounted, clip_rows

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(150)]
Manifest = Callable[[Path, list[dict[str, str]]], Path]

JOBS = 24
SETTLE_S = 75.0
# Short leases so that what a killed worker held is re-driven within seconds; rates
# that never hold enqueues back, so the chaos is what the test measures.
CHAOS_ENV = {
    "SEEDQ_SUBMIT_RATE": "50/s",
    "SEEDQ_POLL_RATE": "50/s",
    "SEEDQ_MAX_IN_FLIGHT": "6",
    "SEEDQ_LEASE_S": "4",
}
QUICK_PROVIDER = {"latency_s": (0.5, 1.5), "max_concurrency": 8}


def rows(prefix: str, n: int = JOBS) -> list[dict[str, str]]:
    return clip_rows(prefix, n)


def submit(c: Any, manifest: Manifest, folder: Path, prefix: str, n: int = JOBS) -> list[str]:
    """`seedq submit` of ``n`` jobs; returns their ids."""
    job_rows = rows(prefix, n)
    folder.mkdir(parents=True, exist_ok=True)
    done = c.seedq("submit", str(manifest(folder, job_rows)), "--name", prefix, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return [r["id"] for r in job_rows]


def wait_until(
    c: Any, ids: list[str], what: str, check: Callable[[], bool], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what}: not within {timeout_s:.0f} s: {c.unsettled(ids)}\n{c.logs()[-6000:]}"
            )
        time.sleep(0.02)


def delivered_at_least(c: Any, ids: list[str], n: int) -> bool:
    return sum(1 for s in c.states(ids).values() if s == "delivered") >= n


def test_workers_killed_again_and_again(cluster: Any, manifest: Manifest, tmp_path: Path) -> None:
    # Slow answers (under the HTTP timeout) keep submits in the workers' hands longer.
    c = cluster(env=CHAOS_ENV, latency_s=(1.0, 2.0), slow_rate=0.3, slow_delay_s=0.8)
    ids = submit(c, manifest, tmp_path / "kills", "kill")

    # Each victim holds an unfinished message of the kind named: the broker gives it to
    # nobody else for hours, so only the leases bring those jobs back.
    for held_task in ("seedq.submit", "seedq.deliver", "seedq.submit", "seedq.deliver"):
        victim: list[Any] = []

        def holds(task: str = held_task, found: list[Any] = victim) -> bool:
            for n, proc in enumerate(c.workers):
                if proc.poll() is None and task in c.holding(n):
                    found.append(proc)
                    return True
            return False

        wait_until(c, ids, f"a worker holding {held_task}", holds, 30)
        os.kill(victim[0].pid, signal.SIGKILL)
        victim[0].wait(timeout=10)
        c.start_worker()

    c.wait_settled(ids, SETTLE_S)
    assert_every_job_accounted(c, ids)


def test_redis_restarted_mid_run(
    dedicated_redis: RedisProcess, cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster(env=CHAOS_ENV, redis_url=dedicated_redis.url, **QUICK_PROVIDER)
    ids = submit(c, manifest, tmp_path / "restart", "restart")

    # Killed outright once, stopped cleanly once; every write was fsync'd before Redis
    # answered it, so whatever a worker was told happened is still there.
    for at_least, sig in ((4, signal.SIGKILL), (12, signal.SIGTERM)):
        wait_until(
            c, ids, f"{at_least} delivered", partial(delivered_at_least, c, ids, at_least), 40
        )
        dedicated_redis.stop(sig)
        time.sleep(2.0)
        dedicated_redis.start()

    c.wait_settled(ids, SETTLE_S)
    assert_every_job_accounted(c, ids)
    exited = [f"worker-{n}" for n, w in enumerate(c.workers) if w.poll() is not None]
    assert not exited, f"exited instead of reconnecting: {exited}\n{c.logs()[-6000:]}"


def test_provider_misbehaving(cluster: Any, manifest: Manifest, tmp_path: Path) -> None:
    # Each 429 halves the poll budget and holds every call for its Retry-After: a sweep
    # every 0.3 s (the e2e default, 50 times production's) would take all that is left.
    c = cluster(
        env={**CHAOS_ENV, "SEEDQ_POLL_INTERVAL_S": "1", "SEEDQ_MAX_IN_FLIGHT": "8"},
        error_rate=0.2,
        rate_limit_rate=0.1,
        drop_rate=0.03,
        drop_after_rate=0.03,
        slow_rate=0.05,
        slow_delay_s=2.5,  # past the workers' 2 s HTTP timeout
        failure_rate=0.05,
        **QUICK_PROVIDER,
    )
    ids = submit(c, manifest, tmp_path / "flaky", "flaky", 20)

    records = c.wait_settled(ids, SETTLE_S)
    assert_every_job_accounted(c, ids, may_fail_at=frozenset({"generate"}))
    for record in records.values():
        if record["state"] == "failed":
            assert record["error"].startswith("generation failed"), record


def test_s3_down_for_a_while(
    s3_proxy: TcpProxy, cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster(env={**CHAOS_ENV, "SEEDQ_S3_ENDPOINT_URL": s3_proxy.url}, **QUICK_PROVIDER)
    ids = submit(c, manifest, tmp_path / "s3down", "s3down")

    wait_until(c, ids, "4 delivered", partial(delivered_at_least, c, ids, 4), 40)
    s3_proxy.down()  # uploads, presigned inputs and checks all fail for a while
    time.sleep(6.0)
    s3_proxy.up()

    # A generation starting while S3 is cut off cannot fetch its presigned input: the
    # provider fails it, and so the job, with that reason (a retry sends it again).
    records = c.wait_settled(ids, SETTLE_S)
    assert_every_job_accounted(c, ids, may_fail_at=frozenset({"generate"}))
    for record in records.values():
        if record["state"] == "failed":
            assert "could not fetch" in record["error"], record
