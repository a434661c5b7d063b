"""Stuck generations, the pure part (worker.stuck) and the store's share: when a
generation is stuck, what the job does about it, how a lost retry is found again, and
the reservation and tallies that move with the job."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from provider.models import Generation
from seedq import keys
from seedq.contract import JobState
from seedq.store import STUCK_FAILURES, STUCK_RETRIES, JobStore
from worker.reconcile import Verdict
from worker.stuck import (
    Stuck,
    duration_text,
    find_retry,
    is_stuck,
    judge,
    retried_from,
    stuck_for_s,
    stuck_reason,
    worth_tracking,
)

AFTER_S = 2700.0
NOW = 1_000_000.0


def gen(
    status: str = "processing",
    started_at: float | None = NOW - AFTER_S,
    generation_id: str = "g-1",
    **extra: Any,
) -> Generation:
    return Generation.model_validate(
        {"generation_id": generation_id, "status": status, "started_at": started_at, **extra}
    )


# -- when a generation is stuck ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "started_at", "stuck"),
    [
        ("processing", NOW - AFTER_S, True),  # exactly the threshold
        ("processing", NOW - AFTER_S - 3600, True),
        ("processing", NOW - AFTER_S + 1, False),  # a second short
        ("processing", None, False),  # start unknown: never judged stuck
        ("queued", NOW - 10 * AFTER_S, False),  # waiting for capacity, not stuck
        ("succeeded", NOW - 10 * AFTER_S, False),
        ("cancelled", NOW - 10 * AFTER_S, False),
        ("processing", NOW + 30, False),  # the provider's clock a little ahead
    ],
)
def test_stuck_is_processing_since_started_at_for_the_threshold(
    status: str, started_at: float | None, stuck: bool
) -> None:
    assert is_stuck(gen(status, started_at), now=NOW, stuck_after_s=AFTER_S) is stuck


def test_stuck_for_counts_from_the_start() -> None:
    assert stuck_for_s("processing", NOW - 12.5, now=NOW) == 12.5
    assert stuck_for_s("processing", NOW + 5, now=NOW) == 0.0
    assert stuck_for_s("queued", NOW - 12.5, now=NOW) is None


@pytest.mark.parametrize(
    ("stuck", "retried", "refused", "may_retry", "verdict"),
    [
        (False, False, False, True, Stuck.NO),
        (False, True, True, True, Stuck.NO),  # running fine, whatever its history
        (True, False, False, True, Stuck.RETRY),  # the job's one retry
        (True, False, False, False, Stuck.NO),  # a retry waits for a paused run
        (True, True, False, True, Stuck.GIVE_UP),  # stuck after the retry
        (True, True, False, False, Stuck.GIVE_UP),  # giving up spends nothing: no wait
        (True, False, True, True, Stuck.GIVE_UP),  # the provider refused to retry it
        (True, False, True, False, Stuck.GIVE_UP),
    ],
)
def test_judge_retries_once_then_gives_up(
    stuck: bool, retried: bool, refused: bool, may_retry: bool, verdict: Stuck
) -> None:
    started = NOW - AFTER_S - 1 if stuck else NOW - 60
    got = judge(
        gen(started_at=started),
        now=NOW,
        stuck_after_s=AFTER_S,
        retried=retried,
        refused=refused,
        may_retry=may_retry,
    )
    assert got is verdict
    # The sweep sends a track task exactly when the step would act on a stuck one.
    if stuck:
        assert worth_tracking(retried=retried or refused, may_retry=may_retry) is (
            verdict is not Stuck.NO
        )


# -- finding a retry whose answer was lost --------------------------------------------------

SENT = NOW - 200.0
GRACE = 120.0


def row(
    generation_id: str, retried_from_id: str | None, enqueued_at: float = SENT + 1
) -> Generation:
    extra = {"retried_from_id": retried_from_id} if retried_from_id else {}
    return gen("queued", None, generation_id, enqueued_at=enqueued_at, **extra)


@pytest.mark.parametrize(
    ("rows", "now", "taken", "verdict", "found"),
    [
        ([row("g-2", "g-1")], NOW, set(), Verdict.FOUND, ["g-2"]),
        ([row("g-2", "g-1"), row("g-2", "g-1")], NOW, set(), Verdict.FOUND, ["g-2"]),
        ([row("g-2", "g-1"), row("g-3", "g-1")], NOW, set(), Verdict.AMBIGUOUS, ["g-2", "g-3"]),
        ([row("g-2", "g-1"), row("g-3", "g-1")], NOW, {"g-3"}, Verdict.FOUND, ["g-2"]),
        ([row("g-9", "g-8"), row("g-7", None)], NOW, set(), Verdict.ABSENT, []),
        ([], SENT + GRACE + 0.5, set(), Verdict.ABSENT, []),
        ([], SENT + GRACE, set(), Verdict.WAIT, []),  # the send may still be under way
        ([], SENT, {"settled"}, Verdict.ABSENT, []),  # the origin answered: absent is absent
        ([row("g-2", "g-1")], SENT + 1, set(), Verdict.FOUND, ["g-2"]),  # found at once
    ],
)
def test_find_retry_by_retried_from_id(
    rows: list[Generation], now: float, taken: set[str], verdict: Verdict, found: list[str]
) -> None:
    got = find_retry(
        rows,
        retried_id="g-1",
        sent_at=SENT,
        now=now,
        grace_s=GRACE,
        settled="settled" in taken,
        taken=frozenset(taken - {"settled"}),
    )
    assert got.verdict is verdict
    assert sorted(g.generation_id for g in got.matches) == found


def test_retried_from_reads_the_unknown_field() -> None:
    assert retried_from(row("g-2", "g-1")) == "g-1"
    assert retried_from(row("g-2", None)) is None
    assert retried_from(gen(retried_from_id=None)) is None
    assert retried_from(gen(retried_from_id=7)) is None


# -- what the operator reads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(2700, "45 min"), (0.2, "0.2 s"), (59, "59 s"), (5400, "1 h 30 min"), (7200, "2 h")],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_stuck_reasons_name_what_was_killed_and_cancelled() -> None:
    twice = stuck_reason(stuck_after_s=2700, generation_id="g-2", killed_id="g-1", refused=None)
    assert twice == (
        "generation stuck processing for 45 min twice: killed g-1 and retried it once; "
        "the retry g-2 was stuck too and is cancelled"
    )
    refused = stuck_reason(
        stuck_after_s=2700, generation_id="g-1", killed_id=None, refused="cannot retry (HTTP 400)"
    )
    assert "g-1 stuck processing for 45 min" in refused
    assert "refused to retry it (cannot retry (HTTP 400))" in refused


# -- the store: the retry's reservation and the run's tallies move with the job -----------


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client)


def submitted_job(store: JobStore, est: float = 0.5, budget: float | None = 10.0) -> None:
    store.create_run("run", "run", {})
    if budget is not None:
        store.redis.hset(keys.run_budget("run"), "cap", budget)
    record = {"model": "m", "params": {"prompt": "p"}, "priority": 0, "est_cost": est}
    for _ in store.register("run", [("j", "fp", record)]):
        pass
    store.set_run_status("run", "active")
    # What admission does for a job it admits (seedq.admission._ADMIT).
    store.redis.hset(keys.job("j"), "reserved_cost", est)
    store.redis.hincrbyfloat(keys.run_budget("run"), "reserved", est)
    for state in (JobState.SUBMITTING, JobState.SUBMITTED):
        assert store.move("j", "run", state, expect=[store.job_state("j")]).ok  # type: ignore[list-item]


def money(store: JobStore) -> tuple[float, float, float, float]:
    job, budget = store.job("j"), store.redis.hgetall(keys.run_budget("run"))
    return (
        float(job["est_cost"]),
        float(job.get("reserved_cost", 0)),
        float(budget.get(b"reserved", 0)),
        float(budget.get(b"spent", 0)),
    )


def test_retry_reserves_one_more_generation_and_undo_returns_it(store: JobStore) -> None:
    submitted_job(store)
    assert money(store) == (0.5, 0.5, 0.5, 0.0)
    moved = store.move(
        "j", "run", JobState.RETRYING, expect=[JobState.SUBMITTED], retry_of="g-1", reserve_more=0.5
    )
    assert moved.ok
    assert money(store) == pytest.approx((1.0, 1.0, 1.0, 0.0))
    job = store.job("j")
    assert "reserve_more" not in job and job["retry_of"] == "g-1"  # pseudo-fields unstored
    store.move("j", "run", JobState.SUBMITTED, expect=[JobState.RETRYING], reserve_more=-0.5)
    assert money(store) == pytest.approx((0.5, 0.5, 0.5, 0.0))


def test_retried_job_is_charged_both_generations(store: JobStore) -> None:
    submitted_job(store)
    store.move("j", "run", JobState.RETRYING, expect=[JobState.SUBMITTED], reserve_more=0.5)
    store.move("j", "run", JobState.SUBMITTED, expect=[JobState.RETRYING], count=STUCK_RETRIES)
    store.move("j", "run", JobState.GENERATED, expect=[JobState.SUBMITTED])
    assert money(store) == pytest.approx((1.0, 0.0, 0.0, 1.0))
    info = store.run("run")
    assert info is not None and (info.stuck_retries, info.stuck_failures) == (1, 0)
    assert info.counts.get("retrying", 0) == 0 and info.counts["generated"] == 1


def test_failed_stuck_job_returns_its_reservation_and_is_tallied(store: JobStore) -> None:
    submitted_job(store)
    store.move("j", "run", JobState.RETRYING, expect=[JobState.SUBMITTED], reserve_more=0.5)
    store.move("j", "run", JobState.SUBMITTED, expect=[JobState.RETRYING])
    store.move("j", "run", JobState.FAILED, expect=[JobState.SUBMITTED], count=STUCK_FAILURES)
    assert money(store) == pytest.approx((1.0, 0.0, 0.0, 0.0), abs=1e-9)  # no clip: unpaid
    info = store.run("run")
    assert info is not None and (info.stuck_retries, info.stuck_failures) == (0, 1)
    assert "count" not in store.job("j")


def test_status_says_which_jobs_were_retried_for_being_stuck(
    real_redis: redis.Redis, real_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    store = JobStore(real_redis)
    submitted_job(store)
    monkeypatch.setenv("SEEDQ_REDIS_URL", real_redis_url)
    quiet = CliRunner().invoke(app, ["status", "run"])
    assert quiet.exit_code == 0 and "stuck" not in quiet.output

    store.move("j", "run", JobState.RETRYING, expect=[JobState.SUBMITTED], reserve_more=0.5)
    store.move("j", "run", JobState.SUBMITTED, expect=[JobState.RETRYING], count=STUCK_RETRIES)
    shown = CliRunner().invoke(app, ["status", "run"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "run run: 1 job(s) had a generation stuck processing, killed and retried once" in (
        shown.output
    )
    store.move("j", "run", JobState.FAILED, expect=[JobState.SUBMITTED], count=STUCK_FAILURES)
    failed = CliRunner().invoke(app, ["status", "run", "--json"])
    assert '"stuck_retries": 1' in failed.output and '"stuck_failures": 1' in failed.output


def test_move_when_fields_hold_and_not_otherwise(store: JobStore) -> None:
    submitted_job(store)
    store.update_job("j", generation_id="g-2")
    moved = store.move_when(
        "j", "run", JobState.RETRYING, expect=[JobState.SUBMITTED], when={"generation_id": "g-1"}
    )
    assert (moved.ok, moved.verdict, moved.before) == (False, "changed", "submitted")
    assert store.job_state("j") is JobState.SUBMITTED
    absent = {"generation_id": "g-2", "stuck_generation_id": ""}  # absent reads as ""
    assert store.move_when(
        "j", "run", JobState.RETRYING, expect=[JobState.SUBMITTED], when=absent
    ).ok
