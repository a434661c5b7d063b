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
import re
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.cluster import assert_every_job_accounted, clip_rows
from tests.e2e.processes import RedisProcess, TcpProxy

# One after another in one xdist worker: each kills and restarts processes, and the
# default-lease test measures the cost of that against a calm run.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.timeout(150),
    pytest.mark.xdist_group("chaos"),
]
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


# The defaults that decide how long a killed worker's jobs wait (SEEDQ_LEASE_S: 300 s,
# SEEDQ_HEARTBEAT_S: 10 s) are left alone here.
DEFAULT_RECOVERY_ENV = {k: v for k, v in CHAOS_ENV.items() if k != "SEEDQ_LEASE_S"}
RECOVERY_JOBS = 60
KILL_COST_S = 30.0  # four kills may add this much to the run, at most
_REAPED = re.compile(r"worker process\(es\) (.+?) stopped beating")


def reaped_workers(c: Any) -> set[str]:
    """The worker processes the tick found dead (their heartbeat lapsed), from the logs."""
    return {w for line in _REAPED.findall(c.logs()) for w in line.split(", ")}


def kill_a_worker_holding(c: Any, ids: list[str], task: str) -> None:
    """SIGKILL a worker that has received a ``task`` message and not finished it (the
    broker gives it to nobody else for hours), and start another in its place."""
    victim: list[Any] = []

    def holds() -> bool:
        for n, proc in enumerate(c.workers):
            # The log says "received" after the worker recorded the message as held
            # (seedq's transport tells of it as it leaves the queue): whatever else the
            # victim is taking in at the kill, nothing is left unacked and not held.
            if proc.poll() is None and task in c.holding(n):
                victim.append(proc)
                return True
        return False

    wait_until(c, ids, f"a worker holding {task}", holds, 30)
    os.kill(victim[0].pid, signal.SIGKILL)
    victim[0].wait(timeout=10)
    c.start_worker()


def test_workers_killed_again_and_again(cluster: Any, manifest: Manifest, tmp_path: Path) -> None:
    # Slow answers (under the HTTP timeout) keep submits in the workers' hands longer.
    c = cluster(env=CHAOS_ENV, latency_s=(1.0, 2.0), slow_rate=0.3, slow_delay_s=0.8)
    ids = submit(c, manifest, tmp_path / "kills", "kill")

    # Each victim holds an unfinished message of the kind named: the broker gives it to
    # nobody else for hours, so only the heartbeats (or the leases) bring those jobs back.
    for held_task in ("seedq.submit", "seedq.deliver", "seedq.submit", "seedq.deliver"):
        kill_a_worker_holding(c, ids, held_task)

    c.wait_settled(ids, SETTLE_S)
    assert_every_job_accounted(c, ids)


@pytest.mark.timeout(480)
def test_killed_workers_cost_seconds_with_the_default_lease(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    """With the default lease (300 s), four SIGKILLs during 60 jobs cost seconds: each
    dead worker's heartbeat lapses and the tick re-drives what it held. The same 60 jobs
    without kills, on the same cluster, set the pace."""
    c = cluster(env=DEFAULT_RECOVERY_ENV, latency_s=(1.0, 2.0), slow_rate=0.3, slow_delay_s=0.8)
    started = time.monotonic()
    calm = submit(c, manifest, tmp_path / "calm", "calm", RECOVERY_JOBS)
    c.wait_settled(calm, 150)
    calm_s = time.monotonic() - started

    started = time.monotonic()
    ids = submit(c, manifest, tmp_path / "kills", "kill", RECOVERY_JOBS)
    # Spread over the run: the k-th kill once 10·k jobs are delivered.
    for k, task in enumerate(("seedq.submit", "seedq.deliver", "seedq.submit", "seedq.deliver")):
        wait_until(c, ids, f"{10 * k} delivered", partial(delivered_at_least, c, ids, 10 * k), 60)
        kill_a_worker_holding(c, ids, task)
    c.wait_settled(ids, calm_s + KILL_COST_S + 60)
    killed_s = time.monotonic() - started

    assert_every_job_accounted(c, calm + ids)  # all delivered, no duplicate enqueue
    print(f"60 jobs: {calm_s:.1f} s calm, {killed_s:.1f} s with four workers killed")
    assert killed_s <= calm_s + KILL_COST_S, (calm_s, killed_s)
    # The heartbeats did it (not the leases): each killed worker was found dead.
    wait_until(c, ids, "four dead workers reaped", lambda: len(reaped_workers(c)) >= 4, 20)
    assert len(reaped_workers(c)) == 4, reaped_workers(c)


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
