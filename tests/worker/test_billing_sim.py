"""Billed cost against the real simulator over HTTP: a delivered job learns what the
provider charged (``GET /api/ai/generations/{id}``), many jobs finished together are
billed from one page of ``GET /api/ai/generations`` however long the account's history,
and the budget, the job and the sidecar carry the bill beside the estimate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from seedq.contract import TASK_DELIVER, JobState
from tests.worker.test_steps import ROW, Pipeline, pipeline_on
from worker.biller import bill_due
from worker.bills import PAGE_MIN_JOBS
from worker.delivery import deliver_job, sidecar_key
from worker.job import DONE, Next

HISTORY = 3000  # the account's past generations, older than any job of the test


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    with pipeline_on(client, tmp_path, history=HISTORY) as p:
        yield p


def deliver(p: Pipeline, run_id: str, job_id: str) -> None:
    assert p.until_generated(run_id, job_id) == Next(TASK_DELIVER)
    assert deliver_job(p.rt, run_id, job_id) is DONE
    assert p.state(job_id) is JobState.DELIVERED


def test_a_delivered_job_is_billed_what_the_simulator_charged(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    deliver(p, run_id, "clip-1")

    done = bill_due(p.rt)
    assert (done.billed, done.calls) == (["clip-1"], 1)
    assert p.stats()["requests"]["GET /api/ai/generations/{generation_id}"] == 1
    charged = p.rt.provider.billed(p.job("clip-1")["generation_id"]).cost
    assert charged is not None and charged > 0
    job = p.job("clip-1")
    assert float(job["billed_cost"]) == pytest.approx(charged)
    assert float(job["cost"]) > 0  # the estimate stays, apart
    assert p.rt.admission.budgets.of(run_id)["spent"] == pytest.approx(charged)
    side = p.storage.get_json(sidecar_key("clip-1.mp4"))
    assert side is not None
    assert (side["cost"]["billed"], side["cost"]["billed_status"]) == (
        pytest.approx(charged),
        "billed",
    )
    assert bill_due(p.rt).calls == 0


def test_jobs_finished_together_are_billed_from_one_page(pipeline: Pipeline) -> None:
    p = pipeline
    ids = [f"clip-{i}" for i in range(PAGE_MIN_JOBS + 1)]
    run_id = p.submit_manifest(
        [{"id": job_id, "input_image": "images/red.png", **ROW} for job_id in ids]
    )
    for job_id in ids:
        deliver(p, run_id, job_id)

    done = bill_due(p.rt)
    assert sorted(done.billed) == ids and done.calls == 1
    assert p.stats()["requests"]["GET /api/ai/generations"] == 1
    assert "GET /api/ai/generations/{generation_id}" not in p.stats()["requests"]
    billed = [float(p.job(job_id)["billed_cost"]) for job_id in ids]
    for job_id, amount in zip(ids, billed, strict=True):
        assert p.rt.provider.billed(p.job(job_id)["generation_id"]).cost == pytest.approx(amount)
    totals = p.rt.store.billing.run(run_id)
    assert (totals.billed_jobs, totals.pending_jobs) == (len(ids), 0)
    assert totals.billed == pytest.approx(sum(billed))
