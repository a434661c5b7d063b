"""Stuck generations over the real simulator (HTTP, in this process): the tick's sweep
and the steps it sends, played as the queues would, with ``SEEDQ_STUCK_AFTER_S`` of two
seconds and the simulator's stuck faults on. Counts the simulator's own retry calls: a retry is
paid at most once per job, and a lost answer is found again, never resent.

The steps' waits are capped at the poll interval (50 ms); the simulator's generations
take 50-100 ms; a stuck one never ends by itself, so each test waits out STUCK_S once or
twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from provider import errors as pe
from seedq.contract import TASK_SUBMIT, TERMINAL_STATES, JobState
from seedq.dispatch import celery_sender
from simulator.config import SimConfig
from tests.fakes import FakeApp
from tests.worker.test_steps import POLL_S, STEPS, Pipeline, pipeline_on
from worker.delivery import sidecar_key
from worker.ticker import TickReport, sweep

# Above a normal generation (0.1 s) plus the simulator's whole-second started_at.
STUCK_S = 2.0
LIMIT_S = 30.0  # a generation takes ~0.1 s, a stuck one STUCK_S: this only stops a hang


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    with pipeline_on(fakeredis.FakeRedis(server=fakeredis.FakeServer()), tmp_path) as p:
        p.rt.settings = p.rt.settings.model_copy(update={"stuck_after_s": STUCK_S})
        yield p


def drive(p: Pipeline, run_id: str, job_id: str) -> None:
    """Submit the job, then sweep every poll interval and run every task the sweep sends
    with the follow-ups of each, until the job ends (or is generated and delivered)."""
    queue: list[tuple[str, float]] = [(TASK_SUBMIT, 0.0)]
    deadline = time.monotonic() + LIMIT_S
    while True:
        while queue:
            task, countdown_s = queue.pop(0)
            time.sleep(min(countdown_s, POLL_S))
            try:
                follow = STEPS[task](p.rt, run_id, job_id)
            except pe.TransientProviderError:
                queue.append((task, POLL_S))  # the task's retry, without the backoff
                continue
            if follow.task:
                queue.append((follow.task, follow.countdown_s))
        if p.state(job_id) in TERMINAL_STATES:
            return
        assert time.monotonic() < deadline, f"{job_id} did not settle: {p.job(job_id)}"
        time.sleep(POLL_S)
        app = FakeApp()
        sweep(p.rt, celery_sender(app), TickReport())
        queue += [(name, 0.0) for name, kwargs, _ in app.sent if kwargs["job_id"] == job_id]


def retry_calls(p: Pipeline) -> tuple[int, int]:
    """The simulator's kill-and-retry requests: received, and applied."""
    stats = p.stats()
    return stats["requests"].get("POST /api/ai/queue/{generation_id}/retry", 0), stats["retried"]


def row(p: Pipeline, generation_id: str) -> dict[str, Any]:
    return p.rt.provider.get(generation_id).model_dump()


def test_stuck_generation_is_retried_once_and_delivered(pipeline: Pipeline) -> None:
    p = pipeline
    p.sim.configure(stuck_rate=1.0, stuck_retry_rate=0.0)
    run_id = p.one_job()
    drive(p, run_id, "clip-1")

    job = p.job("clip-1")
    assert job["state"] == JobState.DELIVERED, job
    killed, new = job["stuck_generation_id"], job["generation_id"]
    assert job["stuck_retries"] == "1" and killed and new != killed
    assert retry_calls(p) == (1, 1)
    p.assert_at_most_once(1)  # one enqueue; the retry made the only other generation
    assert row(p, killed)["status"] == "cancelled"
    assert row(p, new)["retried_from_id"] == killed
    assert p.rt.store.job_for_generation(new) == "clip-1"
    side = json.loads(p.storage.path(sidecar_key("clip-1.mp4")).read_text(encoding="utf-8"))
    assert side["generation_id"] == new
    assert side["stuck_retry"] == {"killed_generation_id": killed, "retries": 1}
    info = p.rt.store.run(run_id)
    assert info is not None and info.stuck_retries == 1


def test_stuck_twice_fails_with_the_reason_and_cancels_the_retry(pipeline: Pipeline) -> None:
    p = pipeline
    p.sim.configure(stuck_rate=1.0, stuck_retry_rate=1.0)
    run_id = p.one_job()
    drive(p, run_id, "clip-1")

    job = p.job("clip-1")
    assert job["state"] == JobState.FAILED, job
    killed, new = job["stuck_generation_id"], job["generation_id"]
    assert job["error"] == (
        f"generation stuck processing for {STUCK_S:g} s twice: killed {killed} and retried "
        f"it once; the retry {new} was stuck too and is cancelled"
    )
    assert retry_calls(p) == (1, 1)
    assert row(p, killed)["status"] == "cancelled" and row(p, new)["status"] == "cancelled"
    assert p.stats()["processing"] == 0  # nothing left costing at the provider
    assert p.lease_until("clip-1") is None  # its slot is free
    info = p.rt.store.run(run_id)
    assert info is not None and (info.stuck_retries, info.stuck_failures) == (1, 1)


def test_lost_retry_answer_is_found_again_not_resent(pipeline: Pipeline) -> None:
    p = pipeline
    p.sim.configure(stuck_rate=1.0, stuck_retry_rate=0.0)
    real = p.rt.provider.retry
    defaults = SimConfig().model_dump()

    def lost_once(generation_id: str) -> Any:
        p.rt.provider.retry = real  # type: ignore[method-assign]
        p.sim.configure(drop_after_rate=1.0)  # applied, then the connection dropped
        try:
            return real(generation_id)
        finally:
            p.sim.configure(drop_after_rate=defaults["drop_after_rate"])

    p.rt.provider.retry = lost_once  # type: ignore[method-assign]
    run_id = p.one_job()
    drive(p, run_id, "clip-1")

    job = p.job("clip-1")
    assert job["state"] == JobState.DELIVERED, job
    assert job["retry_reconciled"] == "1"  # found in the history by retried_from_id
    assert retry_calls(p) == (1, 1)
    assert p.stats()["faults"] == {"drop_after": 1}
    assert row(p, job["generation_id"])["retried_from_id"] == job["stuck_generation_id"]
    p.assert_at_most_once(1)
