"""A reconcile and an audit against an account with a long history, on an httpx
``MockTransport`` that serves ``GET /api/ai/queue`` and ``GET /api/ai/generations`` as
the OpenAPI says (paginated, newest first, filtered by model and status): how many
calls each makes, whatever the length of the history, and that nothing is missed.

The same bounds are shown against the real simulator over HTTP in test_steps and
test_auditor; here the history is built row by row, so a test can put the generation
it looks for exactly where it wants (behind 1,500 newer rows, on the last page, ...).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import httpx
import pytest
from pydantic import SecretStr

from producer.jobs import JobSpec
from provider.client import OxenClient
from seedq import keys
from seedq.admission import admission_for
from seedq.contract import TASK_SUBMIT, JobState
from seedq.settings import DEFAULT_MODEL, Settings
from seedq.store import JobStore
from storage.local import LocalStorage
from tests.worker.fake_history import history_page
from worker.auditor import audit_run, gather
from worker.auditor import findings as audit_findings
from worker.findings import Kind
from worker.inputs import LoopbackInputPublisher
from worker.job import DONE, Next
from worker.retry import RetryPolicy
from worker.runtime import Runtime, poll_throttle, submit_throttle
from worker.submitting import RECHECK_S, grace_s, submit_job

OTHER_MODEL = "another-video-model"
NOW = 1_800_000_000.0  # the account's clock: the past history ends here
PARAMS: dict[str, Any] = {
    "prompt": "a red mug turns slowly",
    "input_image": "https://in/x.png",
    "duration": 4,
}


@dataclass
class Account:
    """An account's generations, newest last in ``rows``; served newest first."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    bytes_read: int = 0

    def add(
        self,
        at: float,
        *,
        model: str = DEFAULT_MODEL,
        status: str = "succeeded",
        cost: float | None = 0.384,
        echo: dict[str, Any] | None = None,
    ) -> str:
        gid = f"gen-{len(self.rows):07d}"
        self.rows.append(
            {
                "generation_id": gid,
                "model_name": model,
                "status": status,
                "media_type": "video",
                "enqueued_at": at,
                "result_url": None,
                "error_message": None,
                "started_at": None,
                "completed_at": None,
                "cost": None if cost is None else f"{cost:.4f}",
                **(echo or {"prompt": f"past clip {len(self.rows)}"}),
            }
        )
        return gid

    def history(self, n: int, *, until: float, spacing_s: float = 1.0) -> None:
        """``n`` past generations, every other one of another model, the last at ``until``."""
        for k in range(n):
            model = OTHER_MODEL if k % 2 else DEFAULT_MODEL
            self.add(until - (n - 1 - k) * spacing_s, model=model)

    def handle(self, request: httpx.Request) -> httpx.Response:
        query = request.url.params
        picked = [
            r
            for r in reversed(self.rows)
            if query.get("model") in (None, r["model_name"])
            and query.get("status", r["status"]) == r["status"]
        ]
        if request.url.path == "/api/ai/queue":
            self.calls["queue"] += 1
            if "status" not in query:
                picked = [r for r in picked if r["status"] in ("queued", "processing")]
            body: dict[str, Any] = {"count": len(picked), "generations": picked}
        elif request.url.path == "/api/ai/generations":
            self.calls["history"] += 1
            body = history_page(self.rows, query)
        elif request.url.path.startswith("/api/ai/generations/"):
            self.calls["billed"] += 1
            gid = request.url.path.rsplit("/", 1)[1]
            row = next((r for r in self.rows if r["generation_id"] == gid), None)
            if row is None:
                return httpx.Response(404, json={"error": {"type": "not_found"}})
            body = {"status": "success", "status_message": "resource_found", "generation": row}
        else:
            return httpx.Response(404, json={"error": {"type": "not_found"}})
        content = json.dumps(body).encode()
        self.bytes_read += len(content)
        return httpx.Response(200, content=content, headers={"content-type": "application/json"})


@dataclass
class Clock:
    now_s: float = NOW

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def account() -> Account:
    return Account()


@pytest.fixture
def rt(account: Account, tmp_path: Any) -> Iterator[Runtime]:
    settings = Settings(
        provider_url="http://provider.test",
        oxen_api_key=SecretStr("sk-history-test-key-0123456789"),
        output=str(tmp_path / "out"),
        submit_rate="1000/s",
        poll_rate="1000/s",
    )
    store = JobStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    provider = OxenClient(
        settings.provider_url,
        "sk-history-test-key-0123456789",
        transport=httpx.MockTransport(account.handle),
    )
    with LoopbackInputPublisher() as publisher:
        yield Runtime(
            settings=settings,
            store=store,
            provider=provider,
            storage=LocalStorage(tmp_path / "out"),
            publisher=publisher,
            policy=RetryPolicy(base_s=0.0, jitter=0.0),
            admission=admission_for(store, settings),
            submit_throttle=submit_throttle(store, settings),
            poll_throttle=poll_throttle(store, settings),
            clock=Clock(),
        )
    provider.close()


def submitting(rt: Runtime, job_id: str = "clip-1", *, started_at: float) -> str:
    """A job left ``submitting`` by a worker that died around its enqueue; the run id."""
    run_id = f"run-{job_id}"
    spec = JobSpec(job_id, "direct", 1, DEFAULT_MODEL, PARAMS, f"{job_id}.mp4")
    if rt.store.run(run_id) is None:
        rt.store.create_run(run_id, "direct", {})
    for _ in rt.store.register(run_id, [(job_id, spec.fingerprint, spec.to_record())]):
        pass
    rt.store.set_run_status(run_id, "active")
    rt.admission.admit()
    moved = rt.store.move(
        job_id,
        run_id,
        JobState.SUBMITTING,
        expect=[JobState.REGISTERED],
        sent_params=json.dumps(PARAMS, sort_keys=True),
        submit_started_at=started_at,
    )
    assert moved.ok, moved
    return run_id


# -- one reconcile: a page or two, however long the history ---------------------------------


@pytest.mark.parametrize("past", [0, 3_000, 20_000])
def test_reconcile_adopts_with_two_calls_whatever_the_history(
    rt: Runtime, account: Account, past: int
) -> None:
    account.history(past, until=NOW - 60)
    started = NOW - 10
    run_id = submitting(rt, started_at=started)
    gid = account.add(started + 1, echo=PARAMS)  # the enqueue did arrive

    assert submit_job(rt, run_id, "clip-1") == DONE
    job = rt.store.job("clip-1")
    assert job["state"] == JobState.SUBMITTED and job["generation_id"] == gid
    assert account.calls == {"queue": 1, "history": 1}
    assert int(job["provider_calls"]) == 2


@pytest.mark.parametrize("past", [0, 3_000, 20_000])
def test_reconcile_proves_absence_with_two_calls_whatever_the_history(
    rt: Runtime, account: Account, past: int
) -> None:
    account.history(past, until=NOW - 600)
    run_id = submitting(rt, started_at=NOW - grace_s(rt) - 1)
    assert submit_job(rt, run_id, "clip-1") == Next(TASK_SUBMIT, 0.0)  # sent again
    assert rt.store.job_state("clip-1") is JobState.REGISTERED
    assert account.calls == {"queue": 1, "history": 1}


def test_reconcile_pages_on_while_the_window_fills_pages(rt: Runtime, account: Account) -> None:
    """1,500 generations of the model enqueued since the send (a busy account): the match
    is on the second page; the walk stops at the third, which reaches before the send."""
    account.history(5_000, until=NOW - 3_000)
    started = NOW - 2_000
    run_id = submitting(rt, started_at=started)
    gid = account.add(started + 1, echo=PARAMS)
    for k in range(1_500):
        account.add(started + 2 + k * 0.5)  # newer rows of the same model
    assert submit_job(rt, run_id, "clip-1") == DONE
    assert rt.store.job("clip-1")["generation_id"] == gid
    assert account.calls == {"queue": 1, "history": 2}  # page 2 reaches before the send


def test_a_match_older_than_the_window_is_not_adopted(rt: Runtime, account: Account) -> None:
    """A generation with the same parameters enqueued before the send began is another
    send's (a previous run's): the walk stops at its page and does not adopt it."""
    account.add(NOW - 3_600, echo=PARAMS)
    account.history(200, until=NOW - 100)
    run_id = submitting(rt, started_at=NOW - grace_s(rt) - 1)
    assert submit_job(rt, run_id, "clip-1") == Next(TASK_SUBMIT, 0.0)
    assert rt.store.job_state("clip-1") is JobState.REGISTERED


def test_a_generation_still_queued_is_found_in_the_active_list(
    rt: Runtime, account: Account
) -> None:
    """A queued generation is in the active list and in the history: one candidate."""
    started = NOW - 10
    run_id = submitting(rt, started_at=started)
    gid = account.add(started + 1, status="queued", cost=None, echo=PARAMS)
    assert submit_job(rt, run_id, "clip-1") == DONE
    assert rt.store.job("clip-1")["generation_id"] == gid


def test_two_matches_in_the_window_need_an_operator(rt: Runtime, account: Account) -> None:
    started = NOW - 10
    run_id = submitting(rt, started_at=started)
    account.add(started + 1, echo=PARAMS)
    account.add(started + 2, echo=PARAMS)
    ended = submit_job(rt, run_id, "clip-1")
    job = rt.store.job("clip-1")
    assert job["state"] == JobState.FAILED and job["needs_operator"] == "1"
    assert ended == Next(failed=job["error"])  # its task ends in FAILURE, with the reason


def test_a_pass_kept_by_an_older_seedq_starts_afresh(rt: Runtime, account: Account) -> None:
    """A pass saved by the five-status reconcile has no ``step``: it is started over,
    never read as a page number."""
    started = NOW - 10
    run_id = submitting(rt, started_at=started)
    old = {"send": rt.store.job("clip-1")["submit_started_at"], "since": NOW, "done": ["queued"]}
    rt.store.update_job("clip-1", reconcile_pass=json.dumps(old | {"found": {}, "fails": 0}))
    gid = account.add(started + 1, echo=PARAMS)
    assert submit_job(rt, run_id, "clip-1") == DONE
    assert rt.store.job("clip-1")["generation_id"] == gid


def test_a_wait_for_a_turn_resumes_at_the_page_it_stopped(
    rt: Runtime, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut short before its second page, the pass resumes there: no call is made twice."""
    account.history(5_000, until=NOW - 3_000)
    started = NOW - 2_000
    run_id = submitting(rt, started_at=started)
    gid = account.add(started + 1, echo=PARAMS)
    for k in range(1_500):
        account.add(started + 2 + k * 0.5)
    turns = iter([0.0, 0.0, 7.0, 0.0, 0.0])
    monkeypatch.setattr("worker.submitting.wait_turn", lambda _throttle: next(turns))
    assert submit_job(rt, run_id, "clip-1") == Next(TASK_SUBMIT, 7.0)
    assert json.loads(rt.store.job("clip-1")["reconcile_pass"])["step"] == 2
    assert submit_job(rt, run_id, "clip-1") == DONE
    assert rt.store.job("clip-1")["generation_id"] == gid
    assert account.calls == {"queue": 1, "history": 2}
    assert "reconcile_pass" not in rt.store.job("clip-1")


def test_within_grace_an_empty_window_waits(rt: Runtime, account: Account) -> None:
    account.history(3_000, until=NOW - 60)
    run_id = submitting(rt, started_at=NOW - 1)
    assert submit_job(rt, run_id, "clip-1") == Next(TASK_SUBMIT, RECHECK_S)
    assert rt.store.job_state("clip-1") is JobState.SUBMITTING


# -- the audit: the run's window only, and the billed totals ---------------------------------


def audited_run(rt: Runtime, account: Account, jobs: int, *, past: int) -> str:
    """A run of ``jobs`` delivered jobs, each with its generation, after ``past`` older
    generations; each job records the cost the provider charged."""
    account.history(past, until=NOW - 7_200)
    run_id = "run-audit"
    rt.store.create_run(run_id, "audit", {})
    rt.store.redis.hset(keys.run(run_id), "created_at", NOW - 3_600)
    specs = []
    for n in range(jobs):
        spec = JobSpec(f"clip-{n}", "direct", n + 1, DEFAULT_MODEL, PARAMS, f"clip-{n}.mp4")
        specs.append((spec.id, spec.fingerprint, spec.to_record()))
    for _ in rt.store.register(run_id, specs):
        pass
    for n in range(jobs):
        gid = account.add(NOW - 3_000 + n, echo={"prompt": f"take {n}"})
        account.add(NOW - 3_000 + n + 0.5, model=OTHER_MODEL)  # another model's, meanwhile
        rt.store.update_job(
            f"clip-{n}",
            state="failed",
            generation_id=gid,
            billed_cost="0.384",
            created_at=NOW - 3_500,
        )
        rt.store.redis.set(keys.generation(gid), f"clip-{n}")
    return run_id


def test_audit_reads_the_runs_window_only(rt: Runtime, account: Account) -> None:
    """20,000 older generations, a run of 1,500: two pages of succeeded rows of the
    model (the second reaching before the run), whatever lies further back."""
    run_id = audited_run(rt, account, 1_500, past=20_000)
    facts = gather(rt.store, rt.provider, rt.storage, run_id)
    assert account.calls == {"history": 2}
    assert {g.generation_id for g in facts.succeeded} >= {
        rt.store.job(f"clip-{n}")["generation_id"] for n in range(1_500)
    }
    kinds = Counter(f.kind for f in audit_findings(facts, now=NOW))
    assert kinds == {Kind.PAID_NOT_DELIVERED: 1_500}  # the jobs say failed: paid, not delivered
    assert Kind.BILLED_MISMATCH not in kinds


def test_audit_finds_a_billed_total_that_differs(rt: Runtime, account: Account) -> None:
    run_id = audited_run(rt, account, 3, past=100)
    rt.store.update_job("clip-1", billed_cost="0.5")  # recorded something else
    facts = gather(rt.store, rt.provider, rt.storage, run_id)
    [mismatch] = [f for f in audit_findings(facts, now=NOW) if f.kind is Kind.BILLED_MISMATCH]
    assert (mismatch.recorded, mismatch.reported) == pytest.approx((1.268, 1.152))
    assert "clip-1 (recorded $0.5000, provider $0.3840)" in mismatch.reason
    row = mismatch.as_dict()
    assert row["recorded_billed"] == pytest.approx(1.268)
    assert row["provider_billed"] == pytest.approx(1.152)


def test_audit_counts_the_stuck_generation_a_job_retried(rt: Runtime, account: Account) -> None:
    """A stuck generation was killed (cancelled, not in the succeeded pages) and charged:
    its cost is asked for by id and counts for the job that retried it."""
    run_id = audited_run(rt, account, 2, past=100)
    stuck = account.add(NOW - 2_900, status="cancelled", cost=0.1, echo={"prompt": "take 0"})
    rt.store.update_job("clip-0", stuck_generation_id=stuck, billed_cost="0.484")
    facts = gather(rt.store, rt.provider, rt.storage, run_id)
    assert facts.costs[stuck] == pytest.approx(0.1)
    assert account.calls["billed"] == 1
    assert not [f for f in audit_findings(facts, now=NOW) if f.kind is Kind.BILLED_MISMATCH]

    rt.store.update_job("clip-0", billed_cost="0.384")  # the retry was not counted
    facts = gather(rt.store, rt.provider, rt.storage, run_id)
    [mismatch] = [f for f in audit_findings(facts, now=NOW) if f.kind is Kind.BILLED_MISMATCH]
    assert "clip-0 (recorded $0.3840, provider $0.4840)" in mismatch.reason


def test_audit_run_takes_a_turn_of_the_poll_budget_per_call(
    rt: Runtime, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An audit beside a running cluster shares its budget: a turn per provider call."""
    run_id = audited_run(rt, account, 1_500, past=3_000)
    stuck = account.add(NOW - 2_900, status="cancelled", cost=0.1, echo={"prompt": "take 0"})
    rt.store.update_job("clip-0", stuck_generation_id=stuck, billed_cost="0.484")
    turns: list[str] = []

    def turn(throttle: Any) -> float:
        turns.append(throttle.name)
        return 0.0

    monkeypatch.setattr("worker.auditor.wait_turn", turn)
    done = audit_run(rt, run_id)
    assert account.calls == {"history": 2, "billed": 1}
    assert turns == ["poll"] * 3
    assert Kind.BILLED_MISMATCH not in {f.kind for f in done.found}


def test_audit_asks_by_id_only_for_jobs_that_recorded_a_bill(rt: Runtime, account: Account) -> None:
    """A run audited mid-way: jobs still in flight own generations the succeeded pages
    lack; with no bill recorded they are not compared, so nothing is asked by id."""
    run_id = audited_run(rt, account, 3, past=100)
    for n in range(3):
        queued = account.add(NOW - 2_000 + n, status="queued", cost=None)
        rt.store.update_job(f"clip-{n}", state="submitted", generation_id=queued)
        rt.store.redis.hdel(keys.job(f"clip-{n}"), "billed_cost")
    facts = gather(rt.store, rt.provider, rt.storage, run_id)
    assert account.calls == {"history": 1} and facts.costs == {}
    assert Kind.BILLED_MISMATCH not in {f.kind for f in audit_findings(facts, now=NOW)}
