"""Throughput control end to end, with real `celery worker` processes on a real Redis and
the simulator: the global in-flight cap as the provider sees it, a worker killed with
SIGKILL mid-run (leases re-drive what it held), and an urgent run overtaking a big one."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seedq import keys
from tests.e2e.cluster import clip_rows

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(90)]
Manifest = Callable[[Path, list[dict[str, str]]], Path]

# Enqueues are not what these tests measure: a budget that never holds them back.
FAST = {"SEEDQ_SUBMIT_RATE": "50/s", "SEEDQ_POLL_RATE": "50/s"}
DRAIN_S = 50.0


def write(manifest: Manifest, folder: Path, job_rows: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return manifest(folder, job_rows)


def submit(c: Any, path: Path, *args: str) -> str:
    """`seedq submit`; returns the run id (its last line of output)."""
    done = c.seedq("submit", str(path), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout.strip().splitlines()[-1])


def wait_delivered(
    c: Any,
    job_ids: list[str],
    timeout_s: float = DRAIN_S,
    seen: dict[str, dict[str, str]] | None = None,
) -> None:
    """Wait until every job is delivered; ``seen`` gathers each job's fields as they
    were read: an ended run's archive compacts its jobs' hashes (``admitted_at`` goes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = c.jobs(job_ids)
        for job_id, record in records.items():
            if seen is not None:
                seen.setdefault(job_id, {}).update(record)
        states = {j: r.get("state", "?") for j, r in records.items()}
        if all(s == "delivered" for s in states.values()):
            return
        stuck = {j: s for j, s in states.items() if s != "delivered"}
        assert time.monotonic() < deadline, f"not delivered: {stuck}\n{c.logs()[-4000:]}"
        assert "failed" not in stuck.values(), f"{stuck}\n{c.logs()[-4000:]}"
        time.sleep(0.2)


def count_in(c: Any, job_ids: list[str], states: set[str]) -> int:
    return sum(1 for r in c.jobs(job_ids).values() if r.get("state") in states)


def test_in_flight_cap_bounds_the_provider(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster(env={**FAST, "SEEDQ_MAX_IN_FLIGHT": "3"}, max_concurrency=10, latency_s=(0.5, 1.0))
    job_rows = clip_rows("cap", 12)
    path = write(manifest, tmp_path / "cap", job_rows)
    done = c.seedq("run", str(path), "--name", "cap", timeout=DRAIN_S)
    assert done.returncode == 0, done.stdout + done.stderr + c.logs()[-4000:]

    stats = c.sim.stats()
    assert (stats["enqueued"], stats["duplicate_enqueues"]) == (12, 0)
    # The simulator could run 10 at once; the cap let at most 3 be queued or processing.
    assert stats["max_concurrent"] <= 3, stats
    assert stats["max_active"] == 3, stats  # and the run did use all three
    assert c.store.zcard(keys.IN_FLIGHT) == 0


@pytest.mark.parametrize("held_task", ["seedq.submit", "seedq.deliver"])
def test_worker_killed_mid_run_loses_nothing(
    cluster: Any, manifest: Manifest, tmp_path: Path, held_task: str
) -> None:
    c = cluster(
        env={**FAST, "SEEDQ_MAX_IN_FLIGHT": "6", "SEEDQ_LEASE_S": "3"},
        max_concurrency=10,
        latency_s=(1.0, 2.0),
    )
    job_rows = clip_rows("kill", 12)
    ids = [r["id"] for r in job_rows]
    submit(c, write(manifest, tmp_path / "kill", job_rows), "--name", "kill")

    # Mid-run (generations running at the provider, others waiting for a slot), and
    # the victim holds a message it has not finished: the broker will not give that
    # message to anyone for hours, so only a lease brings the job back (the in-flight
    # slot's for a submit, the delivery lease for a deliver).
    deadline = time.monotonic() + 30
    victim, held = None, []
    while victim is None:
        assert time.monotonic() < deadline, c.logs()[-4000:]
        if count_in(c, ids, {"submitted", "generated"}) >= 3:
            for n, proc in enumerate(c.workers):
                held = c.holding(n)
                if held_task in held:
                    victim = proc
                    break
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    c.start_worker()

    wait_delivered(c, ids)
    stats = c.sim.stats()
    assert stats["duplicate_enqueues"] == 0, stats
    assert stats["enqueued"] == 12, stats
    assert c.store.zcard(keys.IN_FLIGHT) == 0


def test_urgent_run_overtakes_a_big_one(cluster: Any, manifest: Manifest, tmp_path: Path) -> None:
    c = cluster(env={**FAST, "SEEDQ_MAX_IN_FLIGHT": "3"}, max_concurrency=10, latency_s=(0.3, 0.6))
    big_rows, urgent_rows = clip_rows("big", 40), clip_rows("urgent", 3)
    big, urgent = [r["id"] for r in big_rows], [r["id"] for r in urgent_rows]
    submit(c, write(manifest, tmp_path / "big", big_rows), "--name", "big")
    deadline = time.monotonic() + 30
    while count_in(c, big, {"delivered"}) < 3:  # the big run is well under way
        assert time.monotonic() < deadline, c.logs()[-4000:]
        time.sleep(0.1)
    submit(
        c, write(manifest, tmp_path / "urgent", urgent_rows), "--name", "urgent", "--priority", "10"
    )

    seen: dict[str, dict[str, str]] = {}
    wait_delivered(c, big + urgent, seen=seen)
    big_jobs, urgent_jobs = ({j: seen[j] for j in run} for run in (big, urgent))
    registered = max(float(j["created_at"]) for j in urgent_jobs.values())
    urgent_admitted = max(float(j["admitted_at"]) for j in urgent_jobs.values())
    admitted_later = [float(j["admitted_at"]) for j in big_jobs.values()]
    admitted_later = [t for t in admitted_later if t > registered]
    assert len(admitted_later) >= 3, "the big run had finished before the urgent one came"
    # Every slot freed after the urgent run arrived went to it until it had all it needed.
    assert min(admitted_later) >= urgent_admitted
    last_urgent = max(float(j["delivered_at"]) for j in urgent_jobs.values())
    last_big = max(float(j["delivered_at"]) for j in big_jobs.values())
    assert last_urgent < last_big
    stats = c.sim.stats()
    assert (stats["enqueued"], stats["duplicate_enqueues"]) == (43, 0)
    assert stats["max_active"] <= 3
