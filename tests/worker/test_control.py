"""Run control (worker.control) on fakeredis with a fake provider and a recording sender:
pause, resume, cancel and retry move the right jobs, free slots and reservations, keep
the run's counters right, and do nothing more when repeated."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from cli.retrying import retry, retry_for_resume
from producer.jobs import JobSpec
from provider.errors import ServerError
from provider.models import BilledGeneration, Generation, GenerationList, GenerationPage
from seedq import contract, keys
from seedq.admission import Admission
from seedq.contract import TASK_DELIVER, TASK_SUBMIT, JobState
from seedq.store import JobStore, RunInfo
from worker.control import OPERATOR_PAUSE, ControlError, cancel, pause, resume

RUN = "run-a"
EST = 0.5


@dataclass
class FakeProvider:
    statuses: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    cancelled: list[str] = field(default_factory=list)
    got: list[str] = field(default_factory=list)
    listed: list[Generation] = field(default_factory=list)
    list_calls: int = 0
    history_calls: int = 0

    def cancel(self, generation_id: str) -> None:
        self.cancelled.append(generation_id)
        if generation_id in self.failing:
            raise ServerError("try later", status_code=503)

    def get(self, generation_id: str) -> Any:
        self.got.append(generation_id)
        status = self.statuses.get(generation_id, "processing")
        url = "https://results.example/x.mp4" if status == "succeeded" else None
        return SimpleNamespace(status=status, result_url=url)

    def list(self, *, model: str | None = None, status: str | None = None) -> GenerationList:
        self.list_calls += 1
        active = ("queued", "processing") if status is None else (status,)
        found = [g for g in self.listed if g.status in active and g.model_name == model]
        return GenerationList(count=len(found), generations=found)

    def billed(self, generation_id: str) -> BilledGeneration:
        raise AssertionError("run control never reads a bill")

    def history(
        self,
        *,
        page: int = 1,
        page_size: int = 1000,
        model: str | None = None,
        status: str | None = None,
    ) -> GenerationPage:
        """One page of every status, newest first (the whole of ``listed`` fits)."""
        self.history_calls += 1
        found = [
            g.model_dump()
            for g in sorted(self.listed, key=lambda g: -(g.enqueued_at or 0.0))
            if g.model_name == model and status in (None, g.status)
        ]
        rows = found[(page - 1) * page_size : page * page_size]
        return GenerationPage.model_validate(
            {"generations": rows, "page_number": page, "page_size": page_size}
        )


@dataclass
class Sender:
    sent: list[tuple[str, str]] = field(default_factory=list)

    def __call__(
        self, task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0
    ) -> None:
        self.sent += [(task, m["job_id"]) for m in messages]


@dataclass
class World:
    store: JobStore
    admission: Admission
    provider: FakeProvider = field(default_factory=FakeProvider)
    send: Sender = field(default_factory=Sender)

    def state(self, job_id: str) -> str:
        return self.store.job(job_id)["state"]

    def go(self, job_id: str, *path: JobState, **fields: str | int | float) -> None:
        """Walk a job along ``path`` by compare-and-set, as the workers would."""
        for to in path:
            before = JobState(self.state(job_id))
            assert self.store.move(job_id, RUN, to, expect=[before], **fields).ok

    def waiting(self) -> set[str]:
        values: list[Any] = self.store.redis.zrange(keys.run_waiting(RUN), 0, -1)
        return {v.decode() for v in values}

    def in_flight(self) -> set[str]:
        return set(self.admission.in_flight())

    def assert_counters_right(self) -> None:
        info = self.store.run(RUN)
        assert info is not None
        actual: dict[str, int] = {}
        for job_id in self.store.run_job_ids(RUN):
            actual[self.state(job_id)] = actual.get(self.state(job_id), 0) + 1
        assert {k: v for k, v in info.counts.items() if v} == actual


def world(n: int, *, cap: int = 3, priority: int = 5, budget: float | None = None) -> World:
    client = fakeredis.FakeRedis()
    store = JobStore(client)
    w = World(store, Admission(store, max_in_flight=cap, lease_s=300))
    store.create_run(RUN, "test", {"priority": priority})
    specs = [
        JobSpec(f"j{i}", "m.csv", i + 2, "model", {"prompt": f"p{i}"}, f"j{i}.mp4", est_cost=EST)
        for i in range(n)
    ]
    triples = [(s.id, s.fingerprint, s.to_record()) for s in specs]
    for _ in store.register(RUN, triples, run_priority=priority):
        pass
    if budget is not None:
        w.admission.budgets.set_cap(RUN, budget)
    store.set_run_status(RUN, "active")
    return w


def test_pause_stops_admission_and_says_why() -> None:
    w = world(4)
    pause(w.store, RUN)
    pause(w.store, RUN)  # repeated: same result
    info = w.store.run(RUN)
    assert info is not None and (info.status, info.reason) == ("paused", OPERATOR_PAUSE)
    assert w.admission.admit() == []


def test_resume_requeues_lost_jobs_and_admits_up_to_the_cap() -> None:
    w = world(5, cap=3)
    admitted = [a.job_id for a in w.admission.admit()]
    assert len(admitted) == 3
    pause(w.store, RUN)
    # The submit step of a paused run gives the slot back (worker.submitting)...
    assert w.admission.requeue(RUN, admitted[0], 0)
    # ...and one job got lost: registered, in neither the queue nor the in-flight set.
    lost = sorted(w.waiting())[0]
    w.store.redis.zrem(keys.run_waiting(RUN), lost)
    w.store.redis.delete(keys.ADMISSION_RUNS)

    done = resume(w.store, w.admission, w.send, RUN)

    info = w.store.run(RUN)
    assert info is not None and (info.status, info.reason) == ("active", "")
    assert done.counts["re-queued"] == 1
    assert [t for t, _ in w.send.sent] == [TASK_SUBMIT]  # one slot was free
    assert len(w.in_flight()) == 3 and len(w.waiting()) == 2
    assert w.store.redis.zscore(keys.ADMISSION_RUNS, RUN) == 5.0  # the run's own priority
    again = resume(w.store, w.admission, w.send, RUN)
    assert again.counts["re-queued"] == 0 and len(w.send.sent) == 1
    assert all(w.state(j) == "registered" for j in w.waiting() | w.in_flight())


def test_cancel_moves_every_unfinished_job_and_frees_slots_and_reservations() -> None:
    w = world(6, cap=4, budget=100.0)
    w.admission.admit()  # j0..j3 hold slots and reserve their estimates
    w.go("j0", JobState.SUBMITTING)  # enqueue under way, no generation yet
    w.go("j1", JobState.SUBMITTING)
    w.go("j1", JobState.SUBMITTED, generation_id="gen-1")
    w.go("j2", JobState.SUBMITTING)
    w.go("j2", JobState.SUBMITTED, generation_id="gen-2")
    w.go("j2", JobState.GENERATED, result_url="https://r/2")  # paid: must deliver
    # j3: admitted, message not yet handled; j4, j5: waiting
    w.provider.failing.add("gen-1")

    done = cancel(w.store, w.provider, RUN)

    assert [w.state(f"j{i}") for i in range(6)] == [
        "cancelled", "cancelled", "generated", "cancelled", "cancelled", "cancelled",
    ]  # fmt: skip
    assert w.provider.cancelled == ["gen-1"] and done.provider_calls == 1
    assert done.counts["provider cancel errors"] == 1
    assert done.left == {"provider cancel errors": 1}  # the command line exits 1
    assert done.counts["cancelled before start"] == 3
    assert done.counts["cancelled at the provider"] == 2
    assert done.counts["generated (paid; will deliver)"] == 1
    assert w.in_flight() == set() and w.waiting() == set()
    assert w.admission.budgets.of(RUN)["reserved"] == pytest.approx(0.0)
    assert w.admission.budgets.of(RUN)["spent"] == pytest.approx(EST)  # j2 only
    assert w.store.job("j1")["provider_calls"] == "1"
    info = w.store.run(RUN)
    assert info is not None and info.status == "cancelled"
    w.assert_counters_right()

    again = cancel(w.store, w.provider, RUN)
    assert w.provider.cancelled == ["gen-1"] and again.counts["cancelled before start"] == 0
    with pytest.raises(ControlError):
        resume(w.store, w.admission, w.send, RUN)
    with pytest.raises(ControlError):
        retry(w.store, w.admission, w.provider, w.send, RUN)


def test_cancel_waits_for_an_enqueue_under_way_to_cancel_its_generation() -> None:
    w = world(2, cap=2)
    w.admission.admit()
    w.go("j0", JobState.SUBMITTING)
    w.go("j1", JobState.SUBMITTING)  # its answer never comes
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if w.state("j0") == "submitting":  # the worker's enqueue answers
            w.go("j0", JobState.SUBMITTED, generation_id="gen-0")

    done = cancel(w.store, w.provider, RUN, settle_s=1.0, clock=lambda: now[0], sleep=sleep)

    assert w.provider.cancelled == ["gen-0"]
    assert w.state("j0") == w.state("j1") == "cancelled"
    assert done.counts["cancelled at the provider"] == 2
    assert any(line.startswith("j1: its enqueue") for line in done.listed)
    assert 1.0 <= now[0] < 1.5 and w.in_flight() == set()
    w.assert_counters_right()


def _fail(w: World, job_id: str, step: str, **fields: str | int) -> None:
    w.go(job_id, JobState.FAILED, error=f"boom at {step}", failed_step=step, **fields)


def test_retry_redelivers_paid_generations_and_restarts_the_rest() -> None:
    w = world(7, cap=7, budget=100.0)
    w.admission.admit()
    for i in range(6):
        w.go(f"j{i}", JobState.SUBMITTING)
        w.go(f"j{i}", JobState.SUBMITTED, generation_id=f"gen-{i}")
    w.go("j0", JobState.GENERATED, result_url="https://r/0")
    w.store.update_job("j0", deliver_attempts=10, deliver_first_failure_at=1.0)
    _fail(w, "j0", "deliver")  # paid; only its delivery failed
    _fail(w, "j1", "generate")  # the provider failed it: nothing paid
    _fail(w, "j2", "submit", needs_operator=1)  # several generations matched
    _fail(w, "j3", "track")  # gave up tracking; the provider says it succeeded
    _fail(w, "j4", "track")  # gave up tracking; still running there
    w.go("j5", JobState.GENERATED, result_url="https://r/5")
    w.go("j5", JobState.DELIVERED, cost=EST)  # never touched
    w.go("j6", JobState.SUBMITTING)
    _fail(w, "j6", "submit")  # refused before anything was created
    w.provider.statuses = {"gen-3": "succeeded", "gen-4": "processing"}
    spent_before = w.admission.budgets.of(RUN)["spent"]

    done = retry(w.store, w.admission, w.provider, w.send, RUN)

    states = {f"j{i}": w.state(f"j{i}") for i in range(7)}
    assert states["j0"] == states["j3"] == "generated"
    assert states["j2"] == "failed" and states["j4"] == "failed"
    assert states["j5"] == "delivered"
    assert states["j1"] == states["j6"] == "registered"
    assert sorted(j for t, j in w.send.sent if t == TASK_DELIVER) == ["j0", "j3"]
    assert sorted(j for t, j in w.send.sent if t == TASK_SUBMIT) == ["j1", "j6"]
    assert done.counts["delivery again"] == 2 and done.counts["fresh attempt"] == 2
    assert done.counts["needs an operator (skipped)"] == 1
    assert done.counts["still running at the provider (skipped)"] == 1
    assert any("j2" in line for line in done.listed)
    assert w.provider.got == ["gen-3", "gen-4"]  # only where the outcome was unknown
    j0 = w.store.job("j0")
    assert "deliver_attempts" not in j0 and "deliver_first_failure_at" not in j0
    assert j0["generation_id"] == "gen-0" and j0["result_url"] == "https://r/0"
    assert w.store.job("j3")["result_url"] == "https://results.example/x.mp4"
    assert w.store.job("j1")["generation_id"] == ""  # a fresh attempt, a new generation
    assert w.admission.budgets.of(RUN)["spent"] == pytest.approx(spent_before)  # none paid twice
    w.assert_counters_right()

    again = retry(w.store, w.admission, w.provider, w.send, RUN)
    assert again.counts["delivery again"] == again.counts["fresh attempt"] == 0

    forced = retry(w.store, w.admission, w.provider, w.send, RUN, include_ambiguous=True)
    assert forced.counts["fresh attempt"] == 1 and w.state("j2") == "registered"
    assert "needs_operator" not in w.store.job("j2")
    w.assert_counters_right()


def test_retry_of_an_unanswered_enqueue_asks_the_provider_list_first() -> None:
    w = world(2, cap=2)
    w.admission.admit()
    started = time.time() - 60
    for job_id, prompt in (("j0", "p0"), ("j1", "p1")):
        sent = json.dumps({"prompt": prompt})
        w.go(job_id, JobState.SUBMITTING, sent_params=sent, submit_started_at=started)
        _fail(w, job_id, "submit")  # gave up reconciling: was it created?
    # j0's enqueue did create a generation, which succeeded; j1's never arrived.
    made = Generation.model_validate(
        {
            "id": "gen-x",
            "model": "model",
            "status": "succeeded",
            "prompt": "p0",
            "result_url": "https://r/x",
            "enqueued_at": started + 1,
        }
    )
    w.provider.listed = [made]
    w.provider.statuses = {"gen-x": "succeeded"}

    done = retry(w.store, w.admission, w.provider, w.send, RUN)

    assert w.state("j0") == "generated" and w.store.job("j0")["generation_id"] == "gen-x"
    assert w.store.job_for_generation("gen-x") == "j0"
    assert w.state("j1") == "registered"
    assert sorted(w.send.sent) == [(TASK_DELIVER, "j0"), (TASK_SUBMIT, "j1")]
    # Per job: the active rows and one page of the model's history, never five lists.
    assert (w.provider.list_calls, w.provider.history_calls) == (2, 2)
    assert done.provider_calls == 4 + 1 and done.counts["delivery again"] == 1  # + j0's GET
    w.assert_counters_right()


def test_retry_leaves_a_job_that_failed_mid_stuck_retry_to_an_operator() -> None:
    """A job that gave up while a stuck generation's retry was unanswered may have a
    generation running unowned: a fresh attempt could pay twice."""
    w = world(2, cap=2)
    w.admission.admit()
    for job_id in ("j0", "j1"):
        w.go(job_id, JobState.SUBMITTING)
        w.go(job_id, JobState.SUBMITTED, generation_id=f"gen-{job_id}")
    w.go("j0", JobState.RETRYING, retry_of="gen-j0")
    _fail(w, "j0", "track")
    w.go("j1", JobState.RETRYING, retry_of="gen-j1")
    w.go("j1", JobState.SUBMITTED, retry_of="")  # the retry proved absent: undone
    _fail(w, "j1", "generate")
    w.provider.statuses = {"gen-j0": "cancelled"}  # killed by the retry

    done = retry(w.store, w.admission, w.provider, w.send, RUN)

    assert w.state("j0") == "failed" and done.counts["needs an operator (skipped)"] == 1
    assert any(line.startswith("j0:") for line in done.listed)
    assert w.state("j1") == "registered" and done.counts["fresh attempt"] == 1
    w.assert_counters_right()


def test_a_fresh_attempt_after_a_stuck_failure_starts_clean() -> None:
    """Failed for being stuck twice: the fresh attempt gets its own one stuck retry, its
    estimate back to one generation, and no killed generation to be billed for."""
    w = world(1, cap=1)
    w.admission.admit()
    w.go("j0", JobState.SUBMITTING)
    w.go("j0", JobState.SUBMITTED, generation_id="gen-new")
    stuck: dict[str, str | int | float] = {
        "stuck_generation_id": "gen-old",
        "stuck_retries": 1,
        "stuck_est_cost": EST,
    }
    w.store.update_job("j0", est_cost=2 * EST, stuck_cancel_of="gen-new", **stuck)
    _fail(w, "j0", "generate", stuck_failed=1)

    done = retry(w.store, w.admission, w.provider, w.send, RUN)

    job = w.store.job("j0")
    assert done.counts["fresh attempt"] == 1 and job["state"] == "registered"
    assert float(job["est_cost"]) == pytest.approx(EST)
    assert not {k for k in job if k.startswith(("stuck_", "retry_"))}
    w.assert_counters_right()


def test_a_resumed_run_retries_its_failed_jobs_and_holds_back_what_an_operator_decides() -> None:
    """A paid local run resumed: a failed job whose clip was paid for is delivered again
    from its generation (registering it anew would generate and pay again), one that
    needs an operator is held back from registration."""
    w = world(3, cap=3)
    w.admission.admit()
    for i in range(3):
        w.go(f"j{i}", JobState.SUBMITTING)
    w.go("j0", JobState.SUBMITTED, generation_id="gen-0")
    w.go("j0", JobState.GENERATED, result_url="https://r/0")
    _fail(w, "j0", "deliver")
    _fail(w, "j1", "submit", needs_operator=1)
    w.go("j2", JobState.SUBMITTED, generation_id="gen-2")

    done, held = retry_for_resume(w.store, w.admission, w.provider, w.send, RUN)

    assert w.state("j0") == "generated" and (TASK_DELIVER, "j0") in w.send.sent
    assert held == {"j1"} and done.counts["delivery again"] == 1
    assert w.state("j2") == "submitted"  # not failed: left to its worker
    w.assert_counters_right()


def test_retry_of_a_paused_run_queues_without_sending() -> None:
    w = world(1)
    w.admission.admit()
    w.go("j0", JobState.SUBMITTING)
    _fail(w, "j0", "submit")
    pause(w.store, RUN)
    done = retry(w.store, w.admission, w.provider, w.send, RUN)
    assert done.counts["fresh attempt"] == 1 and w.send.sent == []
    assert w.waiting() == {"j0"} and any("resume" in line for line in done.listed)
    resume(w.store, w.admission, w.send, RUN)
    assert w.send.sent == [(TASK_SUBMIT, "j0")]


def test_unknown_run_is_an_error() -> None:
    w = world(0)
    with pytest.raises(ControlError, match="no run"):
        pause(w.store, "nope")


@pytest.mark.parametrize(
    ("status", "counts", "reason", "shown"),
    [
        ("active", {"delivered": 2, "failed": 1}, "", "finished"),
        ("active", {"delivered": 2, "submitted": 1}, "", "active"),
        ("paused", {"delivered": 3}, "budget", "paused (budget)"),
        ("cancelled", {"cancelled": 3}, "", "cancelled"),
        ("registering", {}, "", "registering"),
    ],
)
def test_shown_status(status: str, counts: dict[str, int], reason: str, shown: str) -> None:
    info = RunInfo("r", "n", 0.0, status, 3, counts, {}, reason)
    assert info.shown_status == shown


def test_resume_with_a_budget_raises_the_cap_and_admits_again() -> None:
    w = world(4, cap=10, budget=1.0)
    first = [a.job_id for a in w.admission.admit()]
    assert len(first) == 2  # 2 x 0.5 fit a cap of 1.0; the third pauses the run
    assert w.admission.holding(RUN) == 2  # admitted, not sent: `seedq run` waits for them
    info = w.store.run(RUN)
    assert info is not None and info.status == "paused" and info.reason.startswith("budget:")

    same = resume(w.store, w.admission, w.send, RUN)  # the same cap: paused again at once
    assert same.counts["sent now"] == 0
    assert w.store.run_status(RUN) == "paused"

    done = resume(w.store, w.admission, w.send, RUN, budget=2.0)

    assert done.counts["sent now"] == 2
    assert w.store.run_status(RUN) == "active"
    assert w.admission.budgets.state(RUN).cap == 2.0
    assert w.admission.budgets.state(RUN).reserved == pytest.approx(2.0)
    assert done.listed == ["budget cap 1.00 -> 2.00 (1.00 committed so far)"]
    assert len(w.in_flight()) == 4 and not w.waiting()
    w.assert_counters_right()


def test_resume_can_set_a_cap_on_a_run_that_had_none() -> None:
    w = world(4, cap=10)
    pause(w.store, RUN)
    done = resume(w.store, w.admission, w.send, RUN, budget=1.0)
    assert done.counts["sent now"] == 2  # what the new cap covers
    assert done.listed == ["budget cap none -> 1.00 (0.00 committed so far)"]
    assert w.store.run_status(RUN) == "paused"  # by the new budget, at the third job
