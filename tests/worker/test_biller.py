"""Billed cost: the pure decisions (worker.bills) as tables, and the tick's billing pass
(worker.biller) on fakeredis with the provider's ``/api/ai/generations`` answered by an
httpx MockTransport (the simulator serves them on branch ``sim``). Time is the test's:
every pass is given its ``now``; nothing sleeps. The pass runs on fakeredis and on the
real Redis (``client``)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from producer.jobs import JobSpec
from provider.client import OxenClient
from provider.protocol import MAX_PAGE_SIZE
from seedq import keys
from seedq.admission import admission_for
from seedq.contract import JobState
from seedq.settings import DEFAULT_MODEL, Settings
from seedq.store import JobStore
from storage.local import LocalStorage
from tests.worker.fake_history import history_page
from worker.biller import MAX_CALLS_PER_PASS, bill_due
from worker.bills import (
    LOOK_DELAYS_S,
    PAGE_MIN_JOBS,
    WINDOW_SLACK_S,
    DueJob,
    job_bill,
    next_look_s,
    page_size_for,
    plan,
    row_charge,
    window_start,
)
from worker.delivery import sidecar_key
from worker.retry import RetryPolicy
from worker.runtime import Runtime, submit_throttle
from worker.throttle import Throttle

T0 = 1_800_000_000.0  # the test's "now" at delivery
OTHER_MODEL = "bytedance-seedance-2-0-fast-image-to-video"


# -- the pure decisions -------------------------------------------------------------------


def due(job_id: str, model: str = DEFAULT_MODEL, **kw: Any) -> DueJob:
    gens = kw.pop("generation_ids", (f"g-{job_id}",))
    return DueJob(job_id, "r", model, gens, kw.pop("sent_at", T0), **kw)


def test_few_jobs_are_asked_by_id_many_from_pages() -> None:
    few = [due(f"a{i}") for i in range(PAGE_MIN_JOBS - 1)]
    many = [due(f"b{i}", OTHER_MODEL) for i in range(PAGE_MIN_JOBS)]
    stuck = due("s", generation_ids=("g-new", "g-killed"))
    missed = due("m", OTHER_MODEL, by_id=True)
    chosen = plan([*few, *many, stuck, missed])
    assert chosen.paged == {OTHER_MODEL: many}
    assert {j.job_id for j in chosen.by_id} == {"a0", "a1", "s", "m"}


@pytest.mark.parametrize(("jobs", "size"), [(1, 100), (50, 100), (300, 600), (5000, 1000)])
def test_page_size_fits_the_jobs_within_the_documented_maximum(jobs: int, size: int) -> None:
    assert page_size_for(jobs) == size <= MAX_PAGE_SIZE


def test_the_window_opens_before_the_oldest_send() -> None:
    jobs = [due("a", sent_at=T0), due("b", sent_at=T0 - 100)]
    start = window_start(jobs)
    assert start == T0 - 100 - WINDOW_SLACK_S
    assert window_start([due("a", sent_at=None)]) is None  # unknown: never ends paging


@pytest.mark.parametrize(
    ("status", "cost", "charge"),
    [
        ("succeeded", 1.25, 1.25),
        ("succeeded", None, None),  # not charged yet: look again
        ("processing", None, None),
        ("cancelled", None, 0.0),  # a killed stuck generation: nothing charged
        ("failed", None, 0.0),
        ("cancelled", 0.4, 0.4),  # a charge shown is a charge
    ],
)
def test_row_charge(status: str, cost: float | None, charge: float | None) -> None:
    assert row_charge(status, cost) == charge


def test_job_bill_is_the_sum_once_every_generation_is_known() -> None:
    assert job_bill([1.0]) == 1.0
    assert job_bill([1.0, 0.25]) == 1.25
    assert job_bill([1.0, None]) is None
    assert job_bill([None]) is None


def test_looks_are_bounded_and_grow() -> None:
    delays = [next_look_s(n) for n in range(1, len(LOOK_DELAYS_S) + 2)]
    assert delays[-1] is None and all(d is not None for d in delays[:-1])
    known = [d for d in delays if d is not None]
    assert known == sorted(known) and sum(known) >= 3600


# -- the provider's history, faked over HTTP -------------------------------------------------


@dataclass
class History:
    """``GET /api/ai/generations`` and ``/{id}``: newest first, ``cost`` per row."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    fail_with: int | None = None
    garbled: bool = False

    def add(self, gen: str, *, cost: float | None, at: float, **kw: Any) -> None:
        self.rows[gen] = {
            "generation_id": gen,
            "model_name": kw.get("model", DEFAULT_MODEL),
            "status": kw.get("status", "succeeded"),
            "cost": None if cost is None else f"{cost:.4f}",
            "enqueued_at": at,
            "result_url": None,
        }

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        kind = "page" if path == "/api/ai/generations" else "one"
        self.requests[kind] += 1
        if self.fail_with:
            return httpx.Response(self.fail_with, json={"error": {"message": "down"}})
        if self.garbled:
            return httpx.Response(200, content=b"<html>not json</html>")
        if kind == "one":
            row = self.rows.get(path.rsplit("/", 1)[1])
            if row is None:
                return httpx.Response(404, json={"error": {"type": "resource_not_found"}})
            return httpx.Response(200, json={"status": "success", "generation": row})
        return httpx.Response(200, json=history_page(self.rows.values(), request.url.params))


@dataclass
class Bench:
    rt: Runtime
    history: History
    storage: LocalStorage

    def delivered(
        self, job_id: str, *, est: float = 1.0, cost: float = 1.1, sent_at: float = T0, **extra: str
    ) -> str:
        """A job moved through the state machine to delivered, its sidecar stored."""
        store, run_id = self.rt.store, f"run-{job_id}"
        model = extra.pop("model", DEFAULT_MODEL)
        spec = JobSpec(job_id, "test", 1, model, {}, f"{job_id}.mp4", est_cost=est)
        store.create_run(run_id, "test", {})
        for _ in store.register(run_id, [(job_id, spec.fingerprint, spec.to_record())]):
            pass
        store.set_run_status(run_id, "active")
        assert [a.job_id for a in self.rt.admission.admit()] == [job_id]
        gen = extra.pop("generation_id", f"g-{job_id}")
        path: list[tuple[JobState, JobState, dict[str, str | float]]] = [
            (JobState.SUBMITTING, JobState.REGISTERED, {"submit_started_at": sent_at}),
            (JobState.SUBMITTED, JobState.SUBMITTING, {"generation_id": gen, **extra}),
            (JobState.GENERATED, JobState.SUBMITTED, {"result_url": "https://x/y"}),
            (JobState.DELIVERED, JobState.GENERATED, {"cost": cost, "warnings": "[]"}),
        ]
        for to, before, fields in path:
            assert store.move(job_id, run_id, to, expect=[before], **fields).ok
        side = {"job_id": job_id, "cost": {"estimated": cost, "billed": None}}
        self.storage.put_json(sidecar_key(f"{job_id}.mp4"), side)
        return run_id

    def job(self, job_id: str) -> dict[str, str]:
        return self.rt.store.job(job_id)

    def sidecar(self, job_id: str) -> dict[str, Any]:
        side = self.storage.get_json(sidecar_key(f"{job_id}.mp4"))
        assert side is not None
        return side

    def spent(self, run_id: str) -> float:
        return self.rt.admission.budgets.of(run_id).get("spent", 0.0)

    def due_at(self, job_id: str) -> float | None:
        score = self.rt.store.redis.zscore(keys.UNBILLED, job_id)
        return None if score is None else float(score)


@pytest.fixture
def bench(tmp_path: Path, client: redis.Redis) -> Bench:
    """On fakeredis and on the real Redis (the Lua scripts run on both)."""
    history = History()
    settings = Settings(
        provider_url="https://hub.example",
        oxen_api_key=SecretStr("sk-biller-test-secret"),
        output=str(tmp_path / "out"),
        poll_rate="1000/s",
    )
    store = JobStore(client)
    storage = LocalStorage(tmp_path / "out")
    rt = Runtime(
        settings=settings,
        store=store,
        provider=OxenClient(
            settings.provider_url,
            "sk-biller-test-secret",
            transport=httpx.MockTransport(history.handler),
        ),
        storage=storage,
        publisher=None,  # type: ignore[arg-type]
        policy=RetryPolicy(base_s=0.0, jitter=0.0),
        admission=admission_for(store, settings),
        submit_throttle=submit_throttle(store, settings),
        # Turns never run out (the budget's own tests are in test_throttle.py): the
        # tests that are about a denied turn say so.
        poll_throttle=Throttle(store.redis, "poll", 1e6, burst=10_000),
        clock=lambda: T0,
    )
    return Bench(rt, history, storage)


# -- the billing pass ---------------------------------------------------------------------


def test_a_delivered_job_learns_its_bill_and_the_budget_charges_it(bench: Bench) -> None:
    b = bench
    run_id = b.delivered("clip-1", est=1.0, cost=1.1)
    assert b.spent(run_id) == pytest.approx(1.1)  # the estimate at delivery, until billed
    assert b.due_at("clip-1") is not None
    b.history.add("g-clip-1", cost=1.05, at=T0)

    done = bill_due(b.rt, now=T0)
    assert (done.billed, done.calls) == (["clip-1"], 1)
    assert b.history.requests == {"one": 1}
    job = b.job("clip-1")
    assert (float(job["billed_cost"]), job["billed_status"]) == (1.05, "billed")
    assert (float(job["cost"]), float(job["est_cost"])) == (1.1, 1.0)  # estimates kept apart
    assert b.spent(run_id) == pytest.approx(1.05)
    totals = b.rt.store.billing.run(run_id)
    assert (totals.estimated, totals.billed, totals.billed_jobs) == (1.1, 1.05, 1)
    side = b.sidecar("clip-1")
    assert side["cost"] == {"estimated": 1.1, "billed": 1.05, "billed_status": "billed"}
    assert b.due_at("clip-1") is None

    assert bill_due(b.rt, now=T0 + 3600).calls == 0  # recorded once, never asked again
    assert b.spent(run_id) == pytest.approx(1.05)


def test_a_cost_not_charged_yet_is_looked_at_again_later(bench: Bench) -> None:
    b = bench
    run_id = b.delivered("clip-1")
    b.history.add("g-clip-1", cost=None, at=T0)
    done = bill_due(b.rt, now=T0)
    assert done.looked == ["clip-1"] and "billed_cost" not in b.job("clip-1")
    assert b.due_at("clip-1") == T0 + LOOK_DELAYS_S[0]
    assert bill_due(b.rt, now=T0 + 1).calls == 0  # not due yet: no call

    b.history.add("g-clip-1", cost=0.9, at=T0)
    assert bill_due(b.rt, now=T0 + LOOK_DELAYS_S[0]).billed == ["clip-1"]
    assert b.spent(run_id) == pytest.approx(0.9)


def test_a_cost_that_never_shows_stays_billed_unknown(bench: Bench) -> None:
    b = bench
    run_id = b.delivered("clip-1", cost=1.1)
    b.history.add("g-clip-1", cost=None, at=T0)
    now, calls = T0, 0
    while (at := b.due_at("clip-1")) is not None:
        now = max(now, at)
        calls += bill_due(b.rt, now=now).calls
        assert calls <= len(LOOK_DELAYS_S) + 1, "the looks must be bounded"
    assert calls == len(LOOK_DELAYS_S) + 1
    job = b.job("clip-1")
    assert job["billed_status"] == "unknown" and "billed_cost" not in job
    assert b.sidecar("clip-1")["cost"]["billed_status"] == "unknown"
    assert b.spent(run_id) == pytest.approx(1.1)  # the estimate stays charged
    assert b.rt.store.billing.run(run_id).unknown_jobs == 1


def test_many_jobs_finishing_together_are_billed_from_one_page(bench: Bench) -> None:
    b = bench
    runs = [b.delivered(f"clip-{i}", sent_at=T0 - i) for i in range(40)]
    for i in range(40):
        b.history.add(f"g-clip-{i}", cost=0.5, at=T0 - i)
    for i in range(300):  # older work of the account, before these jobs
        b.history.add(f"old-{i}", cost=0.5, at=T0 - 10_000 - i)

    done = bill_due(b.rt, now=T0)
    assert len(done.billed) == 40 and done.calls == 1
    assert b.history.requests == {"page": 1}
    assert all(b.spent(r) == pytest.approx(0.5) for r in runs)


def test_paging_stops_at_rows_older_than_the_oldest_job(bench: Bench) -> None:
    b = bench
    for i in range(5):
        b.delivered(f"clip-{i}", sent_at=T0)
    for i in range(3):
        b.history.add(f"g-clip-{i}", cost=0.5, at=T0)
    for i in range(5000):  # a long history; the two missing jobs are not in it
        b.history.add(f"old-{i}", cost=0.5, at=T0 - 10_000 - i)

    done = bill_due(b.rt, now=T0)
    assert sorted(done.billed) == ["clip-0", "clip-1", "clip-2"]
    assert b.history.requests == {"page": 1}  # the first page already reached older rows
    assert sorted(done.looked) == ["clip-3", "clip-4"]
    assert b.job("clip-3")["billing_by_id"] == "1"  # next time: asked by id


def test_a_job_with_a_killed_stuck_generation_is_billed_for_both(bench: Bench) -> None:
    b = bench
    run_id = b.delivered("clip-1", stuck_generation_id="g-killed")
    b.history.add("g-clip-1", cost=1.0, at=T0)
    b.history.add("g-killed", cost=0.3, at=T0 - 3000, status="cancelled")
    assert bill_due(b.rt, now=T0).billed == ["clip-1"]
    assert float(b.job("clip-1")["billed_cost"]) == 1.3
    assert b.spent(run_id) == pytest.approx(1.3)


def test_a_job_of_two_generations_is_billed_one_turn_at_a_time(bench: Bench) -> None:
    """One free turn per pass: the first generation's charge is kept, never asked again."""
    b = bench
    b.delivered("clip-1", stuck_generation_id="g-killed")
    b.history.add("g-clip-1", cost=1.0, at=T0)
    b.history.add("g-killed", cost=0.3, at=T0 - 3000, status="cancelled")
    turns: list[float] = []

    def one_turn_per_pass() -> float:
        turns.append(0.0)
        return 0.0 if len(turns) == 1 else 1.0

    b.rt.poll_throttle.acquire_or_wait_s = one_turn_per_pass  # type: ignore[method-assign]
    first = bill_due(b.rt, now=T0)
    assert (first.calls, first.billed, first.stopped) == (1, [], "budget")
    turns.clear()
    second = bill_due(b.rt, now=T0)
    assert (second.calls, second.billed) == (1, ["clip-1"])
    assert b.history.requests == {"one": 2}
    assert float(b.job("clip-1")["billed_cost"]) == 1.3


def test_a_killed_generation_never_charged_counts_nothing(bench: Bench) -> None:
    b = bench
    b.delivered("clip-1", stuck_generation_id="g-killed")
    b.history.add("g-clip-1", cost=1.0, at=T0)
    b.history.add("g-killed", cost=None, at=T0 - 3000, status="cancelled")
    assert bill_due(b.rt, now=T0).billed == ["clip-1"]
    assert float(b.job("clip-1")["billed_cost"]) == 1.0


def test_an_outage_stops_the_pass_without_counting_a_look(bench: Bench) -> None:
    b = bench
    b.delivered("clip-1")
    b.history.fail_with = 503
    done = bill_due(b.rt, now=T0)
    assert done.calls == 1 and done.stopped.startswith("provider")
    assert done.looked == [] and b.due_at("clip-1") is not None
    assert "billing_looks" not in b.job("clip-1")


def test_an_unreadable_answer_counts_as_a_look(bench: Bench) -> None:
    b = bench
    b.delivered("clip-1")
    b.history.garbled = True
    done = bill_due(b.rt, now=T0)
    assert (done.calls, done.looked) == (1, ["clip-1"])
    assert b.job("clip-1")["billing_looks"] == "1"


def test_no_free_turn_of_the_poll_budget_means_no_call(bench: Bench) -> None:
    b = bench
    b.delivered("clip-1")
    b.history.add("g-clip-1", cost=1.0, at=T0)
    b.rt.poll_throttle.acquire_or_wait_s = lambda: 5.0  # type: ignore[method-assign]
    done = bill_due(b.rt, now=T0)
    assert (done.calls, done.stopped, b.history.requests) == (0, "budget", Counter())
    assert b.due_at("clip-1") is not None


def test_a_pass_makes_at_most_its_share_of_calls(bench: Bench) -> None:
    b = bench
    for i in range(PAGE_MIN_JOBS - 1):
        b.delivered(f"clip-{i}")
    b.delivered("s-1", stuck_generation_id="k-1")
    b.delivered("s-2", stuck_generation_id="k-2")
    done = bill_due(b.rt, now=T0)
    assert done.calls == MAX_CALLS_PER_PASS and done.stopped == "calls"


def test_a_job_registered_again_is_not_billed_for_its_old_entry(bench: Bench) -> None:
    b = bench
    b.delivered("clip-1")
    b.rt.store.redis.hset(keys.job("clip-1"), "state", "registered")
    assert bill_due(b.rt, now=T0).calls == 0
    assert b.due_at("clip-1") is None


def test_a_bill_learned_before_a_redelivery_is_not_overridden(bench: Bench) -> None:
    """The delivered move corrects the budget to the estimate only while no bill is
    known (seedq/lua/transition.lua); a redelivery (audit repair) keeps the bill."""
    b = bench
    run_id = b.delivered("clip-1", cost=1.1)
    b.history.add("g-clip-1", cost=0.7, at=T0)
    bill_due(b.rt, now=T0)
    store = b.rt.store
    assert store.move("clip-1", run_id, JobState.GENERATED, expect=[JobState.DELIVERED]).ok
    assert store.move(
        "clip-1", run_id, JobState.DELIVERED, expect=[JobState.GENERATED], cost=1.2
    ).ok
    assert b.spent(run_id) == pytest.approx(0.7)
    assert b.due_at("clip-1") is None
    assert store.billing.run(run_id).estimated == 1.1  # counted once


def test_json_of_the_fields_stays_readable(bench: Bench) -> None:
    b = bench
    b.delivered("clip-1")
    assert json.loads(b.job("clip-1")["warnings"]) == []
