"""Stuck generations end to end: real `celery worker` processes (their ticker sweeps the
provider's list), a real Redis, the simulator over HTTP with its stuck faults on, and
``SEEDQ_STUCK_AFTER_S`` of three seconds. Counts the simulator's retry calls: one per job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import clip_rows

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(300)]
Manifest = Callable[[Path, list[dict[str, str]]], Path]
# Above a normal generation (0.3-0.8 s) plus the simulator's whole-second started_at.
STUCK = {"SEEDQ_STUCK_AFTER_S": "3"}
N = 3


def retry_calls(c: Any) -> tuple[int, int]:
    """The simulator's kill-and-retry requests: received, and applied."""
    stats = c.sim.stats()
    return stats["requests"].get("POST /api/ai/queue/{generation_id}/retry", 0), stats["retried"]


def said(done: Any) -> str:
    """The command's output with its line wrapping undone."""
    return " ".join((done.stdout + done.stderr).split())


def test_stuck_generations_are_retried_once_and_delivered(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster(env=STUCK, stuck_rate=1.0, stuck_retry_rate=0.0)
    ids = [f"stuck-{i}" for i in range(N)]
    done = c.seedq("run", str(manifest(tmp_path, clip_rows("stuck", N))))
    assert done.returncode == 0, done.stdout + done.stderr + c.logs()[-4000:]
    for job_id, job in c.jobs(ids).items():
        assert job["state"] == "delivered", (job_id, job)
        assert job["stuck_retries"] == "1", (job_id, job)
        assert job["stuck_generation_id"] not in ("", job["generation_id"]), job
    assert retry_calls(c) == (N, N)
    stats = c.sim.stats()
    assert stats["duplicate_enqueues"] == 0 and stats["processing"] == 0, stats
    assert f"{N} job(s) had a generation stuck processing, killed and retried once" in said(done)


def test_generations_stuck_twice_fail_with_the_reason(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster(env=STUCK, stuck_rate=1.0, stuck_retry_rate=1.0)
    ids = [f"twice-{i}" for i in range(N)]
    done = c.seedq("run", str(manifest(tmp_path, clip_rows("twice", N))))
    assert done.returncode == 1, done.stdout + done.stderr
    for job_id, job in c.jobs(ids).items():
        assert job["state"] == "failed", (job_id, job)
        assert job["error"].startswith("generation stuck processing for 3 s twice: killed "), job
        assert job["error"].endswith(
            f"the retry {job['generation_id']} was stuck too and is cancelled"
        )
    assert retry_calls(c) == (N, N)
    stats = c.sim.stats()
    assert stats["processing"] == 0 and stats["queued"] == 0, stats  # nothing left costing
    assert f"{N} failed, stuck again or not retryable" in said(done)
