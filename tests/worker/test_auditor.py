"""The audit end to end in one process: the simulator over HTTP, the job store on
fakeredis and on the real Redis, a local output directory. A run is left with a
delivered job whose video was deleted, a generation paid for but not delivered (its
job was moved back after the enqueue reached the provider) and a job paid for twice;
the audit finds exactly those, ``--repair`` delivers the first two without a single new
enqueue, and a second audit finds only what no repair can undo (the double payment).
The command line is checked last, on the real Redis, with settings from the
environment as an operator would run it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import fakeredis
import pytest
import redis
from typer.testing import CliRunner

from cli.main import app
from provider import errors as pe
from seedq import keys
from seedq.contract import JobState
from seedq.settings import DEFAULT_MODEL
from storage.base import sha256_file
from tests.conftest import TEST_REDIS_URL
from tests.worker.test_steps import (
    API_KEY,
    ROW,
    Pipeline,
    pipeline_on,
    wait_for_status,
)
from worker.auditor import audit_run
from worker.delivery import deliver_job, sidecar_key
from worker.findings import Finding, Kind, Repair
from worker.verify import verify_video


@pytest.fixture
def world(client: redis.Redis, tmp_path: Path) -> Iterator[Pipeline]:
    """Over fakeredis and over the real Redis."""
    with pipeline_on(client, tmp_path, seed=7) as p:
        yield p


@pytest.fixture
def fake_world(tmp_path: Path) -> Iterator[Pipeline]:
    """Over fakeredis only: for what does not depend on the Redis server."""
    with pipeline_on(fakeredis.FakeRedis(server=fakeredis.FakeServer()), tmp_path, seed=7) as p:
        yield p


def delivered(p: Pipeline, run_id: str, job_id: str) -> str:
    p.until_generated(run_id, job_id)
    deliver_job(p.rt, run_id, job_id)
    assert p.state(job_id) is JobState.DELIVERED
    return p.job(job_id)["generation_id"]


def broken_run(p: Pipeline) -> tuple[str, dict[str, str]]:
    """A run of three jobs, each wrong in one way; returns the run and the ids."""
    rows = [
        {"id": f"clip-{n}", "input_image": "images/red.png", **ROW, "prompt": f"take {n}"}
        for n in (1, 2, 3)
    ]
    run_id = p.submit_manifest(rows)
    ids = {"lost": delivered(p, run_id, "clip-1"), "kept": delivered(p, run_id, "clip-3")}
    p.storage.path("clip-1.mp4").unlink()  # the delivered video is gone

    # clip-2: enqueued, then the worker died and the job was moved back as if the
    # enqueue had never arrived: a generation paid for and claimed by no job.
    sent = p.move_to_submitting(run_id, "clip-2", started_at=p.rt.now())
    [orphan] = p.rt.provider.enqueue(DEFAULT_MODEL, sent)
    assert p.rt.store.move("clip-2", run_id, JobState.REGISTERED, expect=[JobState.SUBMITTING]).ok
    # clip-3: delivered, and its parameters enqueued a second time (paid twice).
    [twice] = p.rt.provider.enqueue(DEFAULT_MODEL, json.loads(p.job("clip-3")["sent_params"]))
    ids |= {"orphan": orphan.generation_id, "twice": twice.generation_id}
    for gid in (ids["orphan"], ids["twice"]):
        wait_for_status(p, gid, "succeeded")
    return run_id, ids


def kinds(findings: Sequence[Finding]) -> set[tuple[str, str, str, str]]:
    return {(str(f.kind), f.job_id, f.generation_id, str(f.repair)) for f in findings}


def test_audit_finds_repairs_and_is_clean_after(world: Pipeline) -> None:
    p = world
    run_id, ids = broken_run(p)
    enqueued = p.stats()["enqueued"]
    duplicate = (str(Kind.DUPLICATE_GENERATION), "clip-3", ids["twice"], str(Repair.NONE))

    first = audit_run(p.rt, run_id)
    assert kinds(first.found) == {
        (str(Kind.MISSING_OUTPUT), "clip-1", ids["lost"], str(Repair.REDELIVER)),
        (str(Kind.PAID_NOT_DELIVERED), "clip-2", ids["orphan"], str(Repair.DELIVER)),
        duplicate,
    }
    assert first.repaired == [] and first.remaining == first.found
    assert p.state("clip-2") is JobState.REGISTERED  # an audit alone changes nothing

    fixed = audit_run(p.rt, run_id, fix=True)
    assert {(r.finding.job_id, r.ok) for r in fixed.repaired} == {
        ("clip-1", True),
        ("clip-2", True),
    }
    assert kinds(fixed.remaining) == {duplicate}  # paid twice: nothing to undo
    assert p.stats()["enqueued"] == enqueued  # repairs never enqueue

    for job_id in ("clip-1", "clip-2"):
        job = p.job(job_id)
        video = p.storage.path(f"{job_id}.mp4")
        assert job["state"] == JobState.DELIVERED and job["sha256"] == sha256_file(video)
        verify_video(video, json.loads(job["sent_params"]))
        side = json.loads(p.storage.path(sidecar_key(f"{job_id}.mp4")).read_text("utf-8"))
        assert side["generation_id"] == job["generation_id"]
    assert p.job("clip-2")["generation_id"] == ids["orphan"]
    assert p.rt.store.job_for_generation(ids["orphan"]) == "clip-2"
    assert p.rt.admission.waiting(run_id) == 0  # adopted: admission will never send it
    assert p.lease_until("clip-2") is None  # and the slot it held is free
    info = p.rt.store.run(run_id)
    assert info is not None and info.counts.get("delivered") == 3
    assert {k: v for k, v in info.counts.items() if v} == {"delivered": 3}

    # Safe to repeat: nothing left to repair, nothing written, nothing enqueued.
    writes = dict(p.storage.calls)
    again = audit_run(p.rt, run_id, fix=True, verify=True)
    assert kinds(again.found) == {duplicate} and again.repaired == []
    assert dict(p.storage.calls) == writes
    assert p.stats()["enqueued"] == enqueued


def test_verify_finds_a_corrupt_video_and_repair_replaces_it(fake_world: Pipeline) -> None:
    p = fake_world
    run_id = p.one_job()
    delivered(p, run_id, "clip-1")
    video = p.storage.path("clip-1.mp4")
    size = video.stat().st_size
    video.write_bytes(b"\0" * size)  # same size, not a video any more

    found = audit_run(p.rt, run_id, verify=True).found
    assert {f.kind for f in found} == {Kind.OUTPUT_MISMATCH, Kind.INVALID_OUTPUT}
    assert audit_run(p.rt, run_id).found[0].kind is Kind.OUTPUT_MISMATCH  # sha only

    fixed = audit_run(p.rt, run_id, fix=True, verify=True)
    assert [r.ok for r in fixed.repaired] == [True, True] and fixed.remaining == []
    assert sha256_file(video) == p.job("clip-1")["sha256"]


def test_missing_video_whose_result_is_gone_is_reported_not_lost(fake_world: Pipeline) -> None:
    p = fake_world
    run_id = p.one_job()
    delivered(p, run_id, "clip-1")
    p.storage.path("clip-1.mp4").unlink()
    before = p.job("clip-1")

    def expired(*_: object, **__: object) -> int:
        # Every link, even a fresh one, answers 403: the provider no longer serves it.
        raise pe.ResultUrlExpired("result link refused (HTTP 403)")

    p.rt.provider.download = expired  # type: ignore[method-assign]

    fixed = audit_run(p.rt, run_id, fix=True)
    [result] = fixed.repaired
    assert not result.ok and "sig=" not in result.detail
    assert [f.kind for f in fixed.remaining] == [Kind.MISSING_OUTPUT]
    after = p.job("clip-1")
    assert after["state"] == JobState.DELIVERED  # the record is as it was
    assert (after["sha256"], after["output_uri"]) == (before["sha256"], before["output_uri"])


# -- the command line -----------------------------------------------------------------------


def test_cli_reports_repairs_and_exits_by_what_remains(
    real_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pipeline_on(real_redis, tmp_path, seed=7) as p:
        run_id = p.one_job()
        delivered(p, run_id, "clip-1")
        p.storage.path("clip-1.mp4").unlink()
        settings = {
            "SEEDQ_REDIS_URL": TEST_REDIS_URL,
            "SEEDQ_PROVIDER_URL": p.sim.url,
            "OXEN_API_KEY": API_KEY,
            "SEEDQ_OUTPUT": str(tmp_path / "out"),
            "SEEDQ_ALLOW_PRIVATE_URLS": "true",
        }
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        runner = CliRunner()

        listed = runner.invoke(app, ["audit", run_id, "--format", "jsonl"])
        assert listed.exit_code == 1, listed.output
        [line] = [json.loads(x) for x in listed.stdout.splitlines()]
        assert (line["kind"], line["job_id"], line["repair"]) == (
            "missing_output",
            "clip-1",
            "redeliver",
        )

        repaired = runner.invoke(app, ["audit", run_id, "--repair", "--format", "jsonl"])
        assert repaired.exit_code == 0, repaired.output
        [line] = [json.loads(x) for x in repaired.stdout.splitlines()]
        assert (line["kind"], line["repaired"]) == ("missing_output", True)
        assert line["detail"].startswith("delivered to ")
        assert "1 finding(s), 1 repaired, 0 remain" in repaired.stderr

        clean = runner.invoke(app, ["audit", run_id])
        assert clean.exit_code == 0 and "no findings" in clean.stdout

        unknown = runner.invoke(app, ["audit", "no-such-run"])
        assert unknown.exit_code == 2 and "no run 'no-such-run'" in unknown.stderr
        assert "Traceback" not in unknown.output

        bad_format = runner.invoke(app, ["audit", run_id, "--format", "xml"])
        assert bad_format.exit_code == 2 and "Traceback" not in bad_format.output

        for result in (listed, repaired, clean, unknown):
            assert API_KEY not in result.output and "sig=" not in result.output


def test_repair_whose_delivery_meets_a_full_store_leaves_the_orphan_to_the_workers(
    fake_world: Pipeline,
) -> None:
    """A transient failure while repairing (the store full, the provider down) must not
    fail a paid clip: the job stays generated, with the delivery lease that makes the
    workers deliver it once the store is back."""
    p = fake_world
    run_id, ids = broken_run(p)
    p.storage.full = True
    fixed = audit_run(p.rt, run_id, fix=True)
    [orphan] = [r for r in fixed.repaired if r.finding.job_id == "clip-2"]
    assert not orphan.ok and "left generated" in orphan.detail
    assert p.state("clip-2") is JobState.GENERATED
    assert p.job("clip-2")["generation_id"] == ids["orphan"]
    assert p.rt.store.redis.zscore(keys.DELIVERING, "clip-2") is not None

    p.storage.full = False
    deliver_job(p.rt, run_id, "clip-2")  # what the tick's re-drive runs
    assert p.state("clip-2") is JobState.DELIVERED


# -- a long history and the billed total ------------------------------------------------------


@pytest.fixture
def long_history(tmp_path: Path) -> Iterator[Pipeline]:
    """The simulator's account holds 3,000 older generations of the run's model."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    with pipeline_on(client, tmp_path, seed=7, history=3_000) as p:
        yield p


def test_audit_reads_the_runs_window_of_a_long_history(long_history: Pipeline) -> None:
    """One page of succeeded generations (it reaches back before the run), not the 3,000
    before it; every generation of the run is in it, so the findings are as always."""
    p = long_history
    run_id, ids = broken_run(p)
    before = p.stats()["requests"]
    found = audit_run(p.rt, run_id).found
    requests = p.stats()["requests"]
    listed = {
        k: requests.get(k, 0) - before.get(k, 0)
        for k in ("GET /api/ai/generations", "GET /api/ai/queue")
    }
    assert listed == {"GET /api/ai/generations": 1, "GET /api/ai/queue": 0}
    assert {(str(f.kind), f.job_id, f.generation_id) for f in found} == {
        (str(Kind.MISSING_OUTPUT), "clip-1", ids["lost"]),
        (str(Kind.PAID_NOT_DELIVERED), "clip-2", ids["orphan"]),
        (str(Kind.DUPLICATE_GENERATION), "clip-3", ids["twice"]),
    }


def test_cli_shows_a_billed_total_that_differs_with_both_figures(
    real_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job recorded a billed cost the provider did not charge: the table shows the
    run-wide finding with both figures, the jsonl row carries them as numbers."""
    with pipeline_on(real_redis, tmp_path, seed=7) as p:
        run_id = p.one_job()
        gid = delivered(p, run_id, "clip-1")
        charged = p.rt.provider.billed(gid).cost
        assert charged is not None and charged > 0
        p.rt.store.update_job("clip-1", billed_cost=charged)
        assert audit_run(p.rt, run_id).found == []  # recorded what was charged

        p.rt.store.update_job("clip-1", billed_cost=charged + 0.25)
        settings = {
            "SEEDQ_REDIS_URL": TEST_REDIS_URL,
            "SEEDQ_PROVIDER_URL": p.sim.url,
            "OXEN_API_KEY": API_KEY,
            "SEEDQ_OUTPUT": str(tmp_path / "out"),
            "SEEDQ_ALLOW_PRIVATE_URLS": "true",
        }
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        runner = CliRunner()

        rows = runner.invoke(app, ["audit", run_id, "--format", "jsonl"])
        assert rows.exit_code == 1, rows.output
        [row] = [json.loads(line) for line in rows.stdout.splitlines()]
        assert (row["kind"], row["job_id"], row["repair"]) == ("billed_mismatch", "", "none")
        assert row["recorded_billed"] == pytest.approx(charged + 0.25)
        assert row["provider_billed"] == pytest.approx(charged)

        table = runner.invoke(app, ["audit", run_id])
        assert table.exit_code == 1, table.output
        text = " ".join(table.stdout.split())
        assert "billed_mismatch" in text and "(run)" in text
        assert f"${charged + 0.25:.4f}" in text and f"${charged:.4f}" in text
        for result in (rows, table):
            assert API_KEY not in result.output and "Traceback" not in result.output
