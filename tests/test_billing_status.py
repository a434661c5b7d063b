"""``seedq status`` shows each run's money apart: seedq's estimate for the clips the
provider made, what it billed (pending and unknown bills said as such), and how many
clips were delivered with warnings. On the real Redis, as the command reads it."""

from __future__ import annotations

import json
import time

import pytest
import redis
from typer.testing import CliRunner

from cli.main import app
from cli.run import wait_for_bills
from producer.jobs import JobSpec
from seedq.billing import Billing
from seedq.contract import JobState
from seedq.store import JobStore
from tests.conftest import TEST_REDIS_URL

RUN = "run-money"


def delivered(store: JobStore, job_id: str, *, cost: float, warnings: list[str]) -> None:
    path: list[tuple[JobState, JobState, dict[str, str | float]]] = [
        (JobState.SUBMITTING, JobState.REGISTERED, {}),
        (JobState.SUBMITTED, JobState.SUBMITTING, {"generation_id": f"g-{job_id}"}),
        (JobState.GENERATED, JobState.SUBMITTED, {"generated_at": 1.0}),
        (JobState.DELIVERED, JobState.GENERATED, {"cost": cost, "warnings": json.dumps(warnings)}),
    ]
    for to, before, fields in path:
        assert store.move(job_id, RUN, to, expect=[before], **fields).ok


def test_status_shows_estimated_billed_and_warnings(
    real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(real_redis)
    store.create_run(RUN, "money", {})
    specs = [JobSpec(f"clip-{i}", "m.csv", i, "model", {}, f"clip-{i}.mp4") for i in range(3)]
    for _ in store.register(RUN, [(s.id, s.fingerprint, s.to_record()) for s in specs]):
        pass
    store.set_run_status(RUN, "active")
    delivered(store, "clip-0", cost=1.0, warnings=[])
    delivered(store, "clip-1", cost=1.0, warnings=["has an audio track, but ..."])
    delivered(store, "clip-2", cost=1.0, warnings=[])
    ledger = Billing(real_redis)
    assert ledger.record("clip-0", RUN, 0.9, 10.0)
    assert ledger.give_up("clip-2", RUN)
    monkeypatch.setenv("SEEDQ_REDIS_URL", TEST_REDIS_URL)
    runner = CliRunner()

    shown = runner.invoke(app, ["status", RUN, "--json"])
    assert shown.exit_code == 0, shown.output
    [row] = json.loads(shown.stdout)
    money = row["billing"]
    assert (money["paid_jobs"], money["estimated"], money["billed"]) == (3, 3.0, 0.9)
    assert (money["billed_jobs"], money["unknown_jobs"], money["warned"]) == (1, 1, 1)
    assert row["billing_pending_jobs"] == 1

    table = runner.invoke(app, ["status", RUN], env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "estimated" in table.stdout and "billed" in table.stdout
    assert "0.9 (+1 pending, 1 unknown)" in table.stdout


def test_run_waits_only_while_a_bill_of_its_own_is_being_asked_for(
    real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(real_redis)
    store.create_run(RUN, "money", {})
    spec = JobSpec("clip-0", "m.csv", 1, "model", {}, "clip-0.mp4")
    for _ in store.register(RUN, [(spec.id, spec.fingerprint, spec.to_record())]):
        pass
    store.set_run_status(RUN, "active")
    ledger = Billing(real_redis)
    assert not ledger.asking_now(RUN, 100.0)
    delivered(store, "clip-0", cost=1.0, warnings=[])
    assert ledger.asking_now(RUN, time.time())  # due at delivery: the next pass asks
    assert not ledger.asking_now("another-run", time.time())
    ledger.look_later("clip-0", time.time() + 15)  # no cost yet: a later look
    assert not ledger.asking_now(RUN, time.time())

    def no_sleep(seconds: float) -> None:
        raise AssertionError("waited although no bill of the run is being asked for")

    monkeypatch.setattr("cli.run.time.sleep", no_sleep)
    wait_for_bills(store, RUN, timeout_s=30)
