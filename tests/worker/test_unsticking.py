"""Killing and retrying stuck generations, step by step (worker.unsticking through the
track step and the sweep): a fake provider behind httpx's MockTransport, the real
client, and a fakeredis job store. Time is the runtime's clock, moved by the tests; the
fake provider stamps its rows with the same clock. Nothing sleeps."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest

from provider import errors as pe
from provider.client import OxenClient
from provider.models import CompletionEvent
from seedq import keys
from seedq.admission import Admission
from seedq.contract import TASK_DELIVER, TASK_TRACK, JobState
from seedq.dispatch import celery_sender
from seedq.settings import Settings
from seedq.store import JobStore
from storage.local import LocalStorage
from tests.fakes import FakeApp
from tests.worker.fake_history import history_page
from worker.control import cancel
from worker.errors import RunPaused
from worker.events import handle_event
from worker.inputs import NoInputPublisher
from worker.job import DONE, Job, Next
from worker.retry import RetryPolicy
from worker.runtime import Runtime, poll_throttle, submit_throttle
from worker.submitting import RECHECK_S, grace_s
from worker.ticker import TickReport, redrive_expired, sweep
from worker.tracking import complete, track_job
from worker.unsticking import LAGGING_RETRY_S, retry_stuck

MODEL = "bytedance-seedance-2-0-image-to-video"
STUCK_S = 2700.0  # the production default
EST = 0.5
T0 = 1_900_000_000.0


@dataclass
class Clock:
    t: float = T0

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeOxen:
    """The provider's queue, history, cancel and kill-and-retry, as the contract says.

    ``retry_mode``: ``ok``; ``lost`` (applied, answer lost: a read timeout); ``unsent``
    (a read timeout, nothing applied); ``refused_429``; ``refused_400``; ``settled_500``
    (the origin failed, nothing applied); ``applied_500`` (applied, then a 500).
    ``stuck_retries``: a retry's generation starts processing at once and stays so."""

    clock: Clock
    gens: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    retry_mode: str = "ok"
    stuck_retries: bool = False
    succeed_on_cancel: bool = False  # the generation finishes just before the DELETE
    # Answers a request first when it returns a response (a test's one-off behaviour).
    override: Callable[[httpx.Request], httpx.Response | None] | None = None
    seq: int = 0

    def add(self, status: str = "processing", started_at: float | None = T0, **extra: Any) -> str:
        self.seq += 1
        gid = f"g-{self.seq}"
        self.gens[gid] = {
            "generation_id": gid,
            "model_name": MODEL,
            "prompt": "a red mug",
            "media_type": "video",
            "status": status,
            "result_url": None,
            "error_message": None,
            "enqueued_at": self.clock() - 1,
            "started_at": started_at,
            "completed_at": None,
            "cost": None,
            **extra,
        }
        return gid

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.override is not None and (answer := self.override(request)) is not None:
            return answer
        path, method = request.url.path, request.method
        if method == "GET" and path == "/api/ai/queue":
            self.calls["list"] += 1
            active = [g for g in self.gens.values() if g["status"] in ("queued", "processing")]
            return httpx.Response(200, json={"count": len(active), "generations": active})
        if method == "GET" and path == "/api/ai/generations":
            self.calls["history"] += 1
            return self._history(request)
        found = re.fullmatch(r"/api/ai/queue/([^/]+)(/retry)?", path)
        if found is None or found.group(1) not in self.gens:
            return httpx.Response(404, json={"error": {"message": "not found"}})
        gid, gen = found.group(1), self.gens[found.group(1)]
        if method == "GET":
            self.calls["get"] += 1
            return httpx.Response(200, json=gen)
        if method == "DELETE":
            self.calls["cancel"] += 1
            if self.succeed_on_cancel:
                gen.update(status="succeeded", result_url="https://cdn.example/v.mp4")
            if gen["status"] in ("queued", "processing"):
                gen["status"] = "cancelled"
            return httpx.Response(200, json={"status": "success", "generation_id": gid})
        self.calls["retry"] += 1
        return self._retry(request, gid, gen)

    def _retry(self, request: httpx.Request, gid: str, gen: dict[str, Any]) -> httpx.Response:
        mode = self.retry_mode
        if mode == "refused_429":
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": "slow down"})
        if mode == "refused_400":
            return httpx.Response(400, json={"error": {"message": "cannot be retried"}})
        if mode in ("unsent", "settled_500"):
            if mode == "unsent":
                raise httpx.ReadTimeout("timed out", request=request)
            return httpx.Response(500, json={"error": {"message": "internal error"}})
        gen["status"] = "cancelled"
        started = self.clock() if self.stuck_retries else None
        new = self.add(
            "processing" if self.stuck_retries else "queued", started, retried_from_id=gid
        )
        if mode == "lost":
            raise httpx.ReadTimeout("timed out", request=request)
        if mode == "applied_500":
            return httpx.Response(500, json={"error": {"message": "internal error"}})
        return httpx.Response(
            200, json={"generations": [{"generation_id": new, "status": "queued"}]}
        )

    def _history(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=history_page(self.gens.values(), request.url.params))


@dataclass
class World:
    rt: Runtime
    oxen: FakeOxen
    clock: Clock

    @property
    def store(self) -> JobStore:
        return self.rt.store

    def job(self, job_id: str = "j") -> dict[str, str]:
        return self.store.job(job_id)

    def state(self, job_id: str = "j") -> JobState | None:
        return self.store.job_state(job_id)

    def submitted(self, job_id: str = "j", **gen: Any) -> str:
        """A job admitted and submitted, its generation processing since T0."""
        self.store.create_run("run", "run", {})
        self.store.redis.hset(keys.run_budget("run"), "cap", 100.0)
        record = {"model": MODEL, "params": {"prompt": "a red mug"}, "est_cost": EST}
        record |= {"output_key": f"{job_id}.mp4"}
        for _ in self.store.register("run", [(job_id, f"fp-{job_id}", record)]):
            pass
        self.store.set_run_status("run", "active")
        assert [a.job_id for a in self.rt.admission.admit()] == [job_id]
        gid = self.oxen.add(**gen)
        assert self.store.move(job_id, "run", JobState.SUBMITTING, expect=[JobState.REGISTERED]).ok
        assert self.store.claim_generation(gid, job_id)
        moved = self.store.move(
            job_id, "run", JobState.SUBMITTED, expect=[JobState.SUBMITTING], generation_id=gid
        )
        assert moved.ok
        return gid

    def stuck(self) -> None:
        """Time passes: every generation processing since T0 is now stuck."""
        self.clock.t = T0 + STUCK_S + 60

    def track(self, job_id: str = "j") -> Next:
        return track_job(self.rt, "run", job_id)

    def budget(self) -> dict[str, float]:
        return self.rt.admission.budgets.of("run")

    def holds_slot(self, job_id: str = "j") -> bool:
        return self.store.redis.zscore(keys.IN_FLIGHT, job_id) is not None


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = Clock()
    oxen = FakeOxen(clock)
    settings = Settings(submit_rate="1000/s", poll_rate="1000/s", poll_interval_s=0.01)
    assert settings.stuck_after_s == STUCK_S
    store = JobStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    provider = OxenClient(
        "https://oxen.test", "sk-test-key", transport=httpx.MockTransport(oxen.handler)
    )
    rt = Runtime(
        settings=settings,
        store=store,
        provider=provider,
        storage=LocalStorage(tmp_path / "out"),
        publisher=NoInputPublisher(),
        policy=RetryPolicy(base_s=0.0, jitter=0.0),
        admission=Admission(store, max_in_flight=10, lease_s=300),
        submit_throttle=submit_throttle(store, settings),
        poll_throttle=poll_throttle(store, settings),
        clock=clock,
    )
    yield World(rt, oxen, clock)
    provider.close()


def assert_retried_once(w: World, killed: str, *, retry_calls: int = 1) -> str:
    """The job follows the retry of ``killed``, paid once (``retry_calls`` counts the
    refused calls too: they made nothing)."""
    job = w.job()
    assert job["state"] == JobState.SUBMITTED
    new = job["generation_id"]
    assert new != killed and w.oxen.gens[new]["retried_from_id"] == killed
    assert job["stuck_generation_id"] == killed and job["stuck_retries"] == "1"
    assert w.store.job_for_generation(new) == "j"  # claimed like a normal submit
    assert w.holds_slot()  # the slot was kept throughout
    assert float(job["est_cost"]) == pytest.approx(2 * EST)  # one more generation
    assert w.budget()["reserved"] == pytest.approx(2 * EST)
    assert w.oxen.calls["retry"] == retry_calls
    made = [g for g, row in w.oxen.gens.items() if row.get("retried_from_id") == killed]
    assert made == [new]  # one generation made by a retry, the job's
    info = w.store.run("run")
    assert info is not None and info.stuck_retries == 1
    return new


# -- the sweep ------------------------------------------------------------------------------


def test_sweep_tracks_a_stuck_generation_and_nothing_else(world: World) -> None:
    w = world
    w.submitted("j")
    app, report = FakeApp(), TickReport()
    sweep(w.rt, celery_sender(app), report)
    assert app.jobs() == [] and w.oxen.calls["list"] == 1  # processing, not for long

    w.stuck()
    sweep(w.rt, celery_sender(app), report)
    assert app.jobs() == [(TASK_TRACK, "j")] and report.stuck == ["j"]
    assert w.oxen.calls["get"] == 0  # the list said enough: no per-job polling


def test_sweep_leaves_a_long_queued_generation_alone(world: World) -> None:
    w = world
    w.submitted("j", status="queued", started_at=None)
    w.stuck()
    app = FakeApp()
    sweep(w.rt, celery_sender(app), TickReport())
    assert app.jobs() == []


def test_sweep_holds_a_retry_while_the_run_is_paused_but_not_a_give_up(world: World) -> None:
    w = world
    w.submitted("j")
    w.stuck()
    w.store.pause_run("run", "paused by an operator")
    app = FakeApp()
    sweep(w.rt, celery_sender(app), TickReport())
    assert app.jobs() == []
    # The track step agrees: it renews the job's lease and leaves it running.
    assert w.track() is DONE and w.oxen.calls["retry"] == 0 and w.state() is JobState.SUBMITTED

    w.store.update_job("j", retry_refused_of="g-0")  # another generation's refusal
    sweep(w.rt, celery_sender(app), TickReport())
    assert app.jobs() == []
    w.store.update_job("j", retry_refused_of="g-1")  # this one cannot be retried
    sweep(w.rt, celery_sender(app), TickReport())
    assert app.jobs() == [(TASK_TRACK, "j")]
    w.store.update_job("j", retry_refused_of="", stuck_generation_id="g-0")  # a retry already
    sweep(w.rt, celery_sender(app), TickReport())
    assert app.jobs() == [(TASK_TRACK, "j")] * 2


# -- stuck once: killed and retried ----------------------------------------------------------


def test_stuck_generation_is_killed_and_retried_once(world: World) -> None:
    w = world
    killed = w.submitted()
    assert w.track() is DONE and w.oxen.calls["retry"] == 0  # running, not stuck yet
    w.stuck()
    assert w.track() is DONE
    new = assert_retried_once(w, killed)
    assert w.oxen.gens[killed]["status"] == "cancelled"
    assert w.job()["retry_reconciled"] == "0"

    # A repeated track message, or the sweep again: the new generation is not stuck.
    assert w.track() is DONE
    assert w.oxen.calls["retry"] == 1 and w.job()["generation_id"] == new

    # It finishes: delivered like any other, charged for both generations.
    w.oxen.gens[new].update(status="succeeded", result_url="https://cdn.example/v.mp4")
    assert w.track() == Next(TASK_DELIVER)
    assert w.budget()["spent"] == pytest.approx(2 * EST) and not w.holds_slot()


def test_completion_event_of_the_killed_generation_leaves_the_job_alone(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.track()
    new = assert_retried_once(w, killed)
    event = CompletionEvent(generation_id=killed, status="cancelled")
    assert handle_event(w.rt, celery_sender(FakeApp()), event) == "j"
    assert w.state() is JobState.SUBMITTED and w.job()["generation_id"] == new


# -- a lost answer is found again, never resent ---------------------------------------------


def test_lost_retry_answer_is_found_in_the_history_not_resent(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "lost"
    assert w.track() == Next(TASK_TRACK, RECHECK_S)
    assert w.state() is JobState.RETRYING and w.job()["retry_of"] == killed
    assert w.budget()["reserved"] == pytest.approx(2 * EST)  # reserved before sending

    # The redelivered message (or the recheck, or the lease re-drive) looks, never sends.
    w.oxen.retry_mode = "ok"
    assert w.track() is DONE
    assert_retried_once(w, killed)
    assert w.job()["retry_reconciled"] == "1"
    assert w.oxen.calls["history"] == 1  # one page: the history back to the send


def test_retry_that_never_arrived_is_sent_again_only_after_the_grace_time(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "unsent"
    assert w.track() == Next(TASK_TRACK, RECHECK_S)
    assert w.track() == Next(TASK_TRACK, RECHECK_S)  # absent, but maybe still on its way
    assert w.state() is JobState.RETRYING and w.oxen.calls["retry"] == 1

    w.clock.t += grace_s(w.rt) + 1
    assert w.track() == Next(TASK_TRACK, 0.0)  # proven absent: back to tracking it
    job = w.job()
    assert job["state"] == JobState.SUBMITTED and job["generation_id"] == killed
    assert w.budget()["reserved"] == pytest.approx(EST)  # the retry's reservation returned
    assert float(job["est_cost"]) == pytest.approx(EST)

    w.oxen.retry_mode = "ok"
    assert w.track() is DONE  # still stuck: now it is sent again
    assert w.oxen.calls["retry"] == 2
    new = w.job()["generation_id"]
    assert w.oxen.gens[new]["retried_from_id"] == killed
    assert float(w.job()["est_cost"]) == pytest.approx(2 * EST)


def test_a_retry_the_history_has_not_shown_yet_is_waited_for_never_undone(
    world: World,
) -> None:
    """The browse view lags: the retry landed (the provider cancelled the killed
    generation) but its new row is not in the history yet. Undoing would leave the
    retry's paid generation unowned: the job waits, then goes to an operator."""
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "lost"
    lagging = {"on": True}

    def hide_retried_rows(request: httpx.Request) -> httpx.Response | None:
        if request.url.path != "/api/ai/generations" or not lagging["on"]:
            return None
        rows = [g for g in w.oxen.gens.values() if not g.get("retried_from_id")]
        body = {"generations": rows, "page_number": 1, "page_size": 1000, "total_pages": 1}
        return httpx.Response(200, json=body)

    w.oxen.override = hide_retried_rows
    assert w.track() == Next(TASK_TRACK, RECHECK_S)
    w.clock.t += grace_s(w.rt) + 1
    assert w.track() == Next(TASK_TRACK, RECHECK_S)  # absent from the history, yet applied
    assert w.state() is JobState.RETRYING and w.oxen.calls["retry"] == 1
    assert w.oxen.gens[killed]["status"] == "cancelled"

    lagging["on"] = False
    assert w.track() is DONE  # the row shows at last: adopted, nothing resent
    assert_retried_once(w, killed)


def test_a_retry_whose_row_never_shows_goes_to_an_operator(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "lost"
    w.oxen.override = lambda r: (
        httpx.Response(200, json={"generations": [], "total_pages": 1})
        if r.url.path == "/api/ai/generations"
        else None
    )
    w.track()
    w.clock.t += LAGGING_RETRY_S + 1
    ended = w.track()
    job = w.job()
    assert ended == Next(failed=job["error"])  # its task ends in FAILURE, with the reason
    assert job["state"] == JobState.FAILED and job["needs_operator"] == "1"
    assert killed in job["error"] and w.oxen.calls["retry"] == 1


def test_crash_between_recording_and_sending_resends_after_the_grace_time(
    world: World,
) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    # What the step records before it sends; a crash right after leaves exactly this.
    w.store.move(
        "j",
        "run",
        JobState.RETRYING,
        expect=[JobState.SUBMITTED],
        retry_of=killed,
        retry_started_at=w.clock(),
        stuck_est_cost=EST,
        reserve_more=EST,
    )
    assert w.track() == Next(TASK_TRACK, RECHECK_S)
    w.clock.t += grace_s(w.rt) + 1
    assert w.track() == Next(TASK_TRACK, 0.0)
    assert w.track() is DONE
    assert_retried_once(w, killed)


def test_settled_server_error_is_looked_up_at_once(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "applied_500"
    assert w.track() is DONE  # the origin answered: its row is in the history already
    assert_retried_once(w, killed)
    assert w.job()["retry_reconciled"] == "1"


def test_settled_server_error_that_made_nothing_is_retried_with_backoff(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "settled_500"
    with pytest.raises(pe.ServerError):
        w.track()
    job = w.job()
    assert job["state"] == JobState.SUBMITTED and job["generation_id"] == killed
    assert w.budget()["reserved"] == pytest.approx(EST)


def test_two_rows_retried_from_the_generation_go_to_an_operator(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "lost"
    w.track()
    w.oxen.add("queued", None, retried_from_id=killed)  # a second one (someone else's?)
    ended = w.track()
    job = w.job()
    assert ended == Next(failed=job["error"])
    assert job["state"] == JobState.FAILED and job["needs_operator"] == "1"
    assert "several generations were retried from" in job["error"]
    assert w.oxen.calls["retry"] == 1


# -- refused ------------------------------------------------------------------------------


def test_rate_limited_retry_is_undone_and_tried_again_later(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "refused_429"
    with pytest.raises(pe.RateLimited):
        w.track()
    job = w.job()
    assert job["state"] == JobState.SUBMITTED and job["generation_id"] == killed
    assert "stuck_generation_id" not in job and w.budget()["reserved"] == pytest.approx(EST)
    w.store.redis.delete(keys.PROVIDER_BACKOFF)  # its Retry-After has passed
    w.oxen.retry_mode = "ok"
    assert w.track() is DONE
    assert_retried_once(w, killed, retry_calls=2)


def test_insufficient_credits_pauses_the_run_and_undoes_the_retry(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    real = w.oxen._retry

    def no_credits(request: httpx.Request, gid: str, gen: dict[str, Any]) -> httpx.Response:
        return httpx.Response(402, json={"error": {"message": "Insufficient credits"}})

    w.oxen._retry = no_credits  # type: ignore[method-assign]
    with pytest.raises(RunPaused):
        w.track()
    w.oxen._retry = real  # type: ignore[method-assign]
    assert w.job()["generation_id"] == killed and w.state() is JobState.SUBMITTED
    assert w.budget()["reserved"] == pytest.approx(EST)


def test_retry_refused_for_good_gives_up_with_the_reason(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "refused_400"
    assert w.track() == Next(TASK_TRACK, 0.0)  # look again: it may have succeeded
    assert w.job()["retry_refused_of"] == killed
    assert w.track() == Next(TASK_TRACK, 0.0)  # still stuck: cancelled
    assert w.oxen.gens[killed]["status"] == "cancelled" and w.oxen.calls["cancel"] == 1
    ended = w.track()
    job = w.job()
    assert ended == Next(failed=job["error"])
    assert job["state"] == JobState.FAILED and job["failed_step"] == "generate"
    assert f"generation {killed} stuck processing for 45 min" in job["error"]
    assert "refused to retry it (cannot be retried (HTTP 400" in job["error"]
    assert w.oxen.calls["retry"] == 1


def test_refused_because_it_just_succeeded_is_delivered(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "refused_400"
    w.oxen.gens[killed].update(status="succeeded", result_url="https://cdn.example/v.mp4")

    # The GET still says processing (it succeeded just after); the retry is refused.
    def lagging(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and w.oxen.calls["get"] == 0:
            w.oxen.calls["get"] += 1
            return httpx.Response(200, json={**w.oxen.gens[killed], "status": "processing"})
        return None

    w.oxen.override = lagging
    assert w.track() == Next(TASK_TRACK, 0.0)
    assert w.track() == Next(TASK_DELIVER)
    assert w.state() is JobState.GENERATED and w.oxen.calls["cancel"] == 0


# -- stuck twice: failed, the retry cancelled ------------------------------------------------


def stuck_twice(w: World) -> tuple[str, str]:
    killed = w.submitted()
    w.oxen.stuck_retries = True
    w.stuck()
    assert w.track() is DONE
    new = assert_retried_once(w, killed)
    w.clock.t += STUCK_S + 1
    return killed, new


def test_stuck_twice_fails_with_the_reason_and_cancels_the_retry(world: World) -> None:
    w = world
    killed, new = stuck_twice(w)
    app, report = FakeApp(), TickReport()
    sweep(w.rt, celery_sender(app), report)
    assert app.jobs() == [(TASK_TRACK, "j")]  # the sweep sees the retry stuck too

    assert w.track() == Next(TASK_TRACK, 0.0)
    assert w.oxen.gens[new]["status"] == "cancelled" and w.job()["stuck_cancel_of"] == new
    ended = w.track()
    job = w.job()
    assert ended == Next(failed=job["error"])
    assert job["state"] == JobState.FAILED
    assert job["error"] == (
        f"generation stuck processing for 45 min twice: killed {killed} and retried it "
        f"once; the retry {new} was stuck too and is cancelled"
    )
    assert w.oxen.calls["retry"] == 1 and w.oxen.calls["cancel"] == 1
    assert not w.holds_slot()
    budget = w.budget()  # no clip made: the reservation of both is returned
    assert budget.get("spent", 0.0) == 0.0 and budget["reserved"] == pytest.approx(0, abs=1e-9)
    assert float(job["est_cost"]) == pytest.approx(2 * EST)  # what it was estimated at
    info = w.store.run("run")
    assert info is not None and (info.stuck_retries, info.stuck_failures) == (1, 1)


def test_cancelled_event_of_the_given_up_retry_fails_the_job_with_the_reason(
    world: World,
) -> None:
    w = world
    _killed, new = stuck_twice(w)
    assert w.track() == Next(TASK_TRACK, 0.0)
    # The provider's completion event gets there first: it hands the job to its track
    # task, which fails it (a task's failure, shown in Flower).
    app = FakeApp()
    cancelled = CompletionEvent(generation_id=new, status="cancelled")
    assert handle_event(w.rt, celery_sender(app), cancelled)
    assert app.jobs() == [(TASK_TRACK, "j")] and w.state() is JobState.SUBMITTED
    ended = w.track()
    job = w.job()
    assert job["state"] == JobState.FAILED and "stuck processing" in job["error"]
    assert ended == Next(failed=job["error"])
    assert w.track() is DONE and w.oxen.calls["cancel"] == 1


def test_a_second_track_task_polling_the_given_up_retry_fails_the_job_not_cancels_it(
    world: World,
) -> None:
    """Two track tasks on the retry stuck too: B reads the job, and while its GET is on
    the way, A gives the retry up (records the intent, cancels it). B then sees the
    generation ``cancelled``: seedq's own cancel, so the job fails with the reason, as
    the e2e test once saw it end ``cancelled`` instead."""
    w = world
    killed, new = stuck_twice(w)
    a_said: list[Next] = []

    def a_gives_up_during_b_s_get(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and request.url.path.endswith(new):
            w.oxen.override = None  # once: A's own calls go through
            a_said.append(w.track())  # task A: reads the job, GET, gives up
            assert w.job()["stuck_cancel_of"] == new
        return None

    w.oxen.override = a_gives_up_during_b_s_get
    b = w.track()  # task B read the job before A recorded its intent
    assert a_said == [Next(TASK_TRACK, 0.0)] and w.oxen.gens[new]["status"] == "cancelled"
    job = w.job()
    assert job["state"] == JobState.FAILED, job
    assert job["error"] == (
        f"generation stuck processing for 45 min twice: killed {killed} and retried it "
        f"once; the retry {new} was stuck too and is cancelled"
    )
    assert b == Next(failed=job["error"])
    assert w.track() is DONE  # A's follow-up finds it failed
    assert w.oxen.calls["cancel"] == 1
    info = w.store.run("run")
    assert info is not None and info.stuck_failures == 1
    assert w.budget()["reserved"] == pytest.approx(0, abs=1e-9)


def test_given_up_retry_that_succeeded_meanwhile_is_delivered(world: World) -> None:
    w = world
    stuck_twice(w)
    w.oxen.succeed_on_cancel = True
    assert w.track() == Next(TASK_TRACK, 0.0)
    assert w.track() == Next(TASK_DELIVER)  # paid for: delivered, not failed
    assert w.state() is JobState.GENERATED


def test_give_up_whose_cancel_fails_is_tried_again(world: World) -> None:
    w = world
    _killed, new = stuck_twice(w)

    def unavailable(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE":
            return httpx.Response(503, json={"error": {"message": "unavailable"}})
        return None

    w.oxen.override = unavailable
    with pytest.raises(pe.ServerError):
        w.track()
    assert w.state() is JobState.SUBMITTED  # not failed while its generation still runs
    with pytest.raises(pe.ServerError):
        w.track()  # the step tried again sends the DELETE again
    assert w.state() is JobState.SUBMITTED and w.oxen.gens[new]["status"] == "processing"
    w.oxen.override = None
    assert w.track() == Next(TASK_TRACK, 0.0)
    assert w.track().failed and w.state() is JobState.FAILED
    assert w.oxen.gens[new]["status"] == "cancelled"


# -- an operator cancels the run while a retry is under way ----------------------------------


def test_operator_cancel_during_a_lost_retry_cancels_what_it_made(world: World) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "lost"
    assert w.track() == Next(TASK_TRACK, RECHECK_S)
    done = cancel(w.store, w.rt.provider, "run")
    assert w.state() is JobState.CANCELLED
    assert done.counts["cancelled at the provider"] == 1
    assert any("unanswered" in line for line in done.listed)
    new = next(g for g, row in w.oxen.gens.items() if row.get("retried_from_id") == killed)
    assert w.oxen.gens[new]["status"] == "queued"
    # The recheck the lost answer queued finds what the retry made, and cancels it.
    assert w.track() is DONE
    assert w.oxen.gens[new]["status"] == "cancelled" and w.state() is JobState.CANCELLED
    assert w.job()["retry_of"] == "" and w.oxen.calls["retry"] == 1
    assert w.track() is DONE and w.oxen.calls["history"] == 1  # settled: nothing more


def test_sidecar_cost_counts_the_killed_generation(world: World) -> None:
    from worker.delivery import killed_cost
    from worker.job import Job

    w = world
    killed = w.submitted()
    w.stuck()
    w.track()
    assert_retried_once(w, killed)
    job = Job.parse("j", w.job())
    assert job is not None and killed_cost(job) == pytest.approx(EST)
    plain = Job.parse("j", {**w.job(), "stuck_generation_id": ""})
    assert plain is not None and killed_cost(plain) == 0.0
    assert json.loads(w.job()["spec"])["est_cost"] == EST  # the plan's estimate is kept


def test_retrying_job_whose_lease_expired_is_redriven_to_resolve_not_resend(
    world: World,
) -> None:
    w = world
    killed = w.submitted()
    w.stuck()
    w.oxen.retry_mode = "lost"
    w.track()  # the worker died after sending: its recheck message is lost too
    w.store.redis.zadd(keys.IN_FLIGHT, {"j": 0})  # its lease long expired
    app, report = FakeApp(), TickReport()
    redrive_expired(w.rt, celery_sender(app), report)
    assert app.jobs() == [(TASK_TRACK, "j")] and report.redriven == 1
    w.oxen.retry_mode = "ok"
    assert w.track() is DONE
    assert_retried_once(w, killed)


def test_two_track_tasks_judging_one_stuck_generation_retry_it_once(world: World) -> None:
    """The sweep sends a stuck job's track task every poll interval: two may read the
    job and its generation before either acts. The second must neither retry the
    generation the first killed, nor cancel the job for its ``cancelled`` status."""
    w = world
    killed = w.submitted()
    w.stuck()
    stale = Job.parse("j", w.job())  # task A has read the job...
    assert stale is not None
    assert w.track() is DONE  # ...task B retries the generation
    new = assert_retried_once(w, killed)

    assert retry_stuck(w.rt, stale, killed) is DONE  # A's retry, from its stale read
    killed_now = w.rt.provider.get(killed)
    assert killed_now.status == "cancelled"
    assert complete(w.rt, stale, killed_now.status, result_url=None, error=None) is DONE
    assert_retried_once(w, killed)
    assert w.job()["generation_id"] == new and w.state() is JobState.SUBMITTED
