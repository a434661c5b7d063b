"""Admission under the global in-flight cap, on fakeredis and on a real Redis: the order
of admission (run priority, equal shares, job priority, FIFO), slots released by the
job's own state moves, requeue, leases and their re-drive by the tick, run budgets, and
the tick's sweep of the provider's active list (a fake provider: no HTTP here)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from provider.client import OxenClient
from provider.errors import TransientProviderError
from provider.models import Generation
from seedq import admission as admission_module
from seedq import contract, keys
from seedq.admission import Admission, Admitted
from seedq.contract import JobState
from seedq.dispatch import admit_and_send
from seedq.settings import Settings
from seedq.store import JobStore
from storage.local import LocalStorage
from worker.inputs import NoInputPublisher
from worker.retry import RetryPolicy
from worker.runtime import Runtime, poll_throttle, submit_throttle
from worker.ticker import TickReport, redrive_expired, tick, tick_once

LEASE_S = 0.2  # a lease short enough to sleep past


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client)


def make_run(
    store: JobStore,
    run_id: str,
    jobs: list[str] | list[tuple[str, int]] | list[tuple[str, int, float]],
    *,
    run_priority: int = 0,
    budget: float | None = None,
) -> str:
    """Register a run of ``jobs`` (ids, or (id, priority[, est_cost])) and activate it."""
    store.create_run(run_id, run_id, {})
    if budget is not None:
        store.redis.hset(keys.run_budget(run_id), "cap", budget)
    triples = []
    for job in jobs:
        job_id, priority, est = (job, 0, 0.0) if isinstance(job, str) else (*job, 0.0)[:3]
        record = {"model": "m", "params": {"prompt": job_id}, "priority": priority, "est_cost": est}
        triples.append((str(job_id), f"fp-{job_id}", record))
    for _ in store.register(run_id, triples, run_priority=run_priority):
        pass
    store.set_run_status(run_id, "active")
    return run_id


def ids(admitted: list[Admitted]) -> list[str]:
    return [a.job_id for a in admitted]


def runs_of(admitted: list[Admitted]) -> list[str]:
    return [a.run_id for a in admitted]


def advance(store: JobStore, job_id: str, run_id: str, *path: JobState, **fields: Any) -> None:
    """Move a job along ``path`` (each move a compare-and-set from the state before)."""
    before = store.job_state(job_id)
    assert before is not None
    for state in path:
        assert store.move(job_id, run_id, state, expect=[before], **fields).ok, (job_id, state)
        before = state


def holds_slot(store: JobStore, run_id: str, job_id: str) -> bool:
    in_global = store.redis.zscore(keys.IN_FLIGHT, job_id) is not None
    in_run = bool(store.redis.sismember(keys.run_in_flight(run_id), job_id))
    assert in_global == in_run, "the global and the run's in-flight sets disagree"
    return in_global


# -- order of admission ---------------------------------------------------------------------


def test_higher_priority_run_takes_every_free_slot(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=4, lease_s=60)
    make_run(store, "nightly", [f"n{i}" for i in range(6)])
    make_run(store, "urgent", [f"u{i}" for i in range(6)], run_priority=10)

    first = adm.admit()
    assert runs_of(first) == ["urgent"] * 4
    assert adm.admit() == []  # the cap is full

    for job_id in ("u0", "u1"):
        advance(store, job_id, "urgent", JobState.GENERATED)
    assert runs_of(adm.admit()) == ["urgent", "urgent"]
    for job_id in ("u2", "u3", "u4", "u5"):
        advance(store, job_id, "urgent", JobState.GENERATED)
    # The urgent run has nothing left: its freed slots go to the nightly run.
    assert ids(adm.admit()) == ["n0", "n1", "n2", "n3"]


def test_equal_priority_runs_share_the_slots(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=4, lease_s=60)
    make_run(store, "run-a", [f"a{i}" for i in range(6)])
    make_run(store, "run-b", [f"b{i}" for i in range(6)])

    first = adm.admit()
    assert len(first) == 4
    assert sorted(runs_of(first)) == ["run-a", "run-a", "run-b", "run-b"]
    assert all(x != y for x, y in zip(runs_of(first), runs_of(first)[1:], strict=False))
    assert sorted(ids(first)) == ["a0", "a1", "b0", "b1"]

    # A freed slot goes to the run that has fewer in flight, whoever freed it.
    advance(store, "a0", "run-a", JobState.FAILED)
    assert [(a.run_id, a.job_id) for a in adm.admit()] == [("run-a", "a2")]
    advance(store, "b0", "run-b", JobState.CANCELLED)
    advance(store, "b1", "run-b", JobState.GENERATED)
    assert sorted(ids(adm.admit())) == ["b2", "b3"]


def test_job_priority_then_first_in_first_out(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=10, lease_s=60)
    make_run(store, "run", [("j1", 0), ("j2", 5), ("j3", 0), ("j4", 5), ("j5", 1)])
    assert ids(adm.admit()) == ["j2", "j4", "j5", "j1", "j3"]


def test_max_batch_bounds_one_admission(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=10, lease_s=60)
    make_run(store, "run", [f"j{i}" for i in range(5)])
    assert ids(adm.admit(max_batch=2)) == ["j0", "j1"]
    assert ids(adm.admit(max_batch=2)) == ["j2", "j3"]
    assert adm.waiting("run") == 1


def test_paused_run_is_skipped_and_others_go_on(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=4, lease_s=60)
    make_run(store, "paused", ["p0", "p1"], run_priority=5)
    make_run(store, "other", ["o0"])
    store.pause_run("paused", "operator says stop")
    assert ids(adm.admit()) == ["o0"]
    assert adm.waiting("paused") == 2
    store.set_run_status("paused", "active")
    assert ids(adm.admit()) == ["p0", "p1"]


@pytest.mark.redis
def test_cap_holds_under_concurrent_admission(real_redis: redis.Redis) -> None:
    """Threads admit and free slots at once; one Lua call per decision keeps the cap."""
    store = JobStore(real_redis)
    cap, n_runs, per_run, n_threads = 5, 3, 30, 8
    for r in range(n_runs):
        make_run(store, f"run-{r}", [f"r{r}-j{i}" for i in range(per_run)], run_priority=r % 2)
    admitted: list[Admitted] = []
    overflow: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def worker() -> None:
        mine = JobStore(real_redis)  # the client is thread-safe: a pool of connections
        adm = Admission(mine, max_in_flight=cap, lease_s=60)
        start.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = adm.admit(max_batch=2)
            seen = int(mine.redis.zcard(keys.IN_FLIGHT))
            with lock:
                admitted.extend(got)
                if seen > cap:
                    overflow.append(seen)
                done = len(admitted) >= n_runs * per_run
            for a in got:
                advance(mine, a.job_id, a.run_id, JobState.SUBMITTING, JobState.SUBMITTED)
                advance(mine, a.job_id, a.run_id, JobState.GENERATED)
            if done:
                return

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert overflow == []
    assert sorted(ids(admitted)) == sorted(
        f"r{r}-j{i}" for r in range(n_runs) for i in range(per_run)
    )  # every job admitted exactly once
    assert real_redis.zcard(keys.IN_FLIGHT) == 0


# -- slots follow the job's state ---------------------------------------------------------


@pytest.mark.parametrize(
    "leaving", [JobState.GENERATED, JobState.FAILED, JobState.CANCELLED, JobState.DELIVERED]
)
def test_slot_is_released_when_the_generation_leaves(store: JobStore, leaving: JobState) -> None:
    adm = Admission(store, max_in_flight=1, lease_s=60)
    make_run(store, "run", ["j1", "j2"])
    assert ids(adm.admit()) == ["j1"]

    advance(store, "j1", "run", JobState.SUBMITTING)
    assert holds_slot(store, "run", "j1")
    advance(store, "j1", "run", JobState.REGISTERED)  # refused: sent again, slot kept
    assert holds_slot(store, "run", "j1")
    advance(store, "j1", "run", JobState.SUBMITTING, JobState.SUBMITTED)
    assert holds_slot(store, "run", "j1")
    assert adm.admit() == []

    advance(store, "j1", "run", leaving)
    assert not holds_slot(store, "run", "j1")
    assert ids(adm.admit()) == ["j2"]


def test_refused_or_stale_move_releases_nothing(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=2, lease_s=60)
    make_run(store, "run", ["j1"])
    adm.admit()
    assert not store.move("j1", "other-run", JobState.FAILED, expect=[JobState.REGISTERED]).ok
    assert not store.move("j1", "run", JobState.GENERATED, expect=[JobState.SUBMITTED]).ok
    assert holds_slot(store, "run", "j1")


def test_requeue_returns_slot_and_reservation_to_the_head(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=2, lease_s=60)
    make_run(store, "run", [("a", 0, 0.4), ("b", 0, 0.4), ("c", 5, 0.4)], budget=10.0)
    assert ids(adm.admit()) == ["c", "a"]
    assert adm.budgets.of("run")["reserved"] == pytest.approx(0.8)

    assert adm.requeue("run", "a", 0)
    assert not holds_slot(store, "run", "a")
    assert adm.budgets.of("run")["reserved"] == pytest.approx(0.4)
    assert store.job("a")["reserved_cost"] == "0"
    assert not adm.requeue("run", "a", 0)  # twice is once
    assert adm.budgets.of("run")["reserved"] == pytest.approx(0.4)

    # Back at the head of its priority: before b, which waited all along.
    assert ids(adm.admit(max_batch=1)) == ["a"]
    assert adm.budgets.of("run")["reserved"] == pytest.approx(0.8)


def test_requeued_job_of_a_drained_run_keeps_its_run_priority(store: JobStore) -> None:
    """A run whose queue emptied leaves the admission set; a requeue puts it back with
    its own priority, not the lowest, or an urgent job would wait behind a nightly run."""
    adm = Admission(store, max_in_flight=2, lease_s=60)
    # Named so that, were both at priority 0, the nightly run would come first.
    make_run(store, "a-urgent", ["u0"], run_priority=10)
    assert ids(adm.admit()) == ["u0"]
    make_run(store, "z-nightly", ["n0", "n1"], run_priority=0)
    store.pause_run("z-nightly", "held for a moment")
    assert adm.admit() == []  # its scan drops the drained urgent run
    assert store.redis.zscore(keys.ADMISSION_RUNS, "a-urgent") is None
    store.set_run_status("z-nightly", "active")

    assert adm.requeue("a-urgent", "u0", 0)  # e.g. its run was paused, then resumed
    assert ids(adm.admit(max_batch=1)) == ["u0"]


# -- leases -------------------------------------------------------------------------------


def test_lease_expires_unless_renewed(store: JobStore) -> None:
    lease_s = 0.4  # each sleep below is well clear of a lease's end
    adm = Admission(store, max_in_flight=4, lease_s=lease_s)
    make_run(store, "run", ["j1", "j2"])
    adm.admit()
    assert adm.leases.expired() == []
    time.sleep(lease_s * 0.6)
    adm.leases.renew(["j1"])
    time.sleep(lease_s * 0.6)
    assert adm.leases.expired() == ["j2"]  # j1 was renewed in time
    time.sleep(lease_s * 0.6)
    assert sorted(adm.leases.expired()) == ["j1", "j2"]
    adm.leases.renew(["j1", "j2", "not-in-flight"])
    assert adm.leases.expired() == []
    assert store.redis.zscore(keys.IN_FLIGHT, "not-in-flight") is None  # renew adds nothing


def test_an_admitted_job_whose_message_was_never_sent_is_redriven_within_the_send_lease(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed between admitting a job and sending its message (a tick, or the
    task that freed the slot) left the job with a slot and no message for a whole lease;
    now its slot is leased only briefly until the send, and a whole lease after it."""
    monkeypatch.setattr(admission_module, "SEND_LEASE_S", 0.3)
    rt = runtime(store, tmp_path, FakeProvider(), lease_s=60.0)
    make_run(store, "run", ["lost", "sent"])
    lost = rt.admission.admit(max_batch=1)  # and then the process died
    assert [a.job_id for a in lost] == ["lost"]
    app = Recorder()
    assert admit_and_send(rt.admission, app) == 1
    assert app.sent == [(contract.TASK_SUBMIT, "run", "sent")]

    time.sleep(0.4)
    app.sent.clear()
    redrive_expired(rt, app, TickReport())
    assert app.sent == [(contract.TASK_SUBMIT, "run", "lost")]  # "sent" holds a whole lease


def test_leases_extended_for_a_countdown_are_never_cut_short(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=4, lease_s=10.0)
    make_run(store, "run", ["j1"])
    adm.admit()
    now = float(store.redis.time()[0])
    adm.leases.renew(["j1"], ahead_s=600.0)  # waiting out a long Retry-After
    extended = store.redis.zscore(keys.IN_FLIGHT, "j1")
    assert extended is not None and extended >= now + 610.0 - 1
    adm.leases.renew(["j1"])  # the sweep's routine renewal
    assert store.redis.zscore(keys.IN_FLIGHT, "j1") == extended

    store.redis.zadd(keys.DELIVERING, {"j1": now})
    adm.leases.touch_deliveries(["j1"], ahead_s=600.0)
    adm.leases.touch_deliveries(["j1", "not-delivering"])
    heard = store.redis.zscore(keys.DELIVERING, "j1")
    assert heard is not None and heard >= now + 600.0 - 1
    assert adm.leases.stalled_deliveries() == []
    assert store.redis.zscore(keys.DELIVERING, "not-delivering") is None


def test_expire_all_makes_every_lease_due_and_keeps_every_slot(store: JobStore) -> None:
    """A killed local run's leases: due at once for the next tick, no slot given away."""
    adm = Admission(store, max_in_flight=2, lease_s=3600.0)
    make_run(store, "run", ["j1", "j2", "j3"])
    assert ids(adm.admit()) == ["j1", "j2"]
    now = float(store.redis.time()[0])
    store.redis.zadd(keys.DELIVERING, {"j0": now})  # a generated job, heard of just now
    assert adm.leases.expired() == [] and adm.leases.stalled_deliveries() == []

    assert adm.leases.expire_all() == 3

    assert sorted(adm.leases.expired()) == ["j1", "j2"]
    assert adm.leases.stalled_deliveries() == ["j0"]
    assert sorted(adm.in_flight()) == ["j1", "j2"]
    assert adm.admit() == []  # j3 still waits: the cap is still taken
    assert store.redis.zscore(keys.IN_FLIGHT, "j3") is None


@dataclass
class Recorder:
    """A Sender that keeps (task, run id, job id) of each message."""

    sent: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(
        self, task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0
    ) -> None:
        self.sent.extend((task, m["run_id"], m["job_id"]) for m in messages)


@dataclass
class Listed:
    generation_id: str
    status: str = "processing"
    started_at: float | None = None  # unknown: never judged stuck


@dataclass
class Listing:
    generations: list[Listed]


@dataclass
class FakeProvider:
    """The one call the sweep makes, the list of active generations, and the status call
    of a generation it tracks itself (``ended``: a generation's status, its result)."""

    active: set[str] = field(default_factory=set)
    calls: int = 0
    gate: threading.Event | None = None
    ended: dict[str, str] = field(default_factory=dict)
    got: list[str] = field(default_factory=list)
    get_s: float = 0.0
    get_error: Exception | None = None

    def get(self, generation_id: str) -> Generation:
        self.got.append(generation_id)
        time.sleep(self.get_s)
        if self.get_error is not None:
            raise self.get_error
        status = self.ended[generation_id]  # a KeyError: a status call nobody expected
        url = f"https://cdn.example/{generation_id}.mp4" if status == "succeeded" else None
        return Generation(generation_id=generation_id, status=status, result_url=url)

    def list(self, **filters: Any) -> Listing:
        assert filters == {}  # no status filter: the active ones
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        return Listing([Listed(g) for g in sorted(self.active)])


def runtime(
    store: JobStore,
    tmp_path: Path,
    provider: FakeProvider,
    lease_s: float,
    *,
    sweep_tracks: int = 0,
    poll_interval_s: float = 0.01,
) -> Runtime:
    """``sweep_tracks``: 0 unless a test is about the sweep's own tracking, so that every
    finished generation goes to the track queue, where these tests look for it."""
    settings = Settings(
        lease_s=lease_s,
        poll_interval_s=poll_interval_s,
        submit_rate="1000/s",
        poll_rate="1000/s",
        sweep_tracks=sweep_tracks,
    )
    return Runtime(
        settings=settings,
        store=store,
        provider=cast(OxenClient, provider),
        storage=LocalStorage(tmp_path / "out"),
        publisher=NoInputPublisher(),
        policy=RetryPolicy(base_s=0.0, jitter=0.0),
        admission=Admission(store, max_in_flight=10, lease_s=lease_s),
        submit_throttle=submit_throttle(store, settings),
        poll_throttle=poll_throttle(store, settings),
    )


def test_tick_redrives_expired_leases_by_state(store: JobStore, tmp_path: Path) -> None:
    # g-1 is still running: the sweep renews it, so only the re-drive sends its track.
    rt = runtime(store, tmp_path, FakeProvider(active={"g-1"}), LEASE_S)
    make_run(store, "run", ["reg", "sub-ing", "sub-ed", "gen"])
    app = Recorder()
    report = tick(rt, app)
    assert report.admitted == 4 and report.redriven == 0
    assert sorted(j for *_, j in app.sent) == ["gen", "reg", "sub-ed", "sub-ing"]
    advance(store, "sub-ing", "run", JobState.SUBMITTING)
    advance(store, "sub-ed", "run", JobState.SUBMITTING)
    advance(store, "sub-ed", "run", JobState.SUBMITTED, generation_id="g-1")
    # A worker died between the move to generated and the slot's release (by hand: the
    # move itself releases it).
    store.redis.hset(keys.job("gen"), "state", str(JobState.GENERATED))

    time.sleep(LEASE_S + 0.1)
    app.sent.clear()
    report = tick(rt, app)
    assert report.admitted == 0
    assert sorted(app.sent) == [
        (contract.TASK_SUBMIT, "run", "reg"),
        (contract.TASK_SUBMIT, "run", "sub-ing"),
        (contract.TASK_TRACK, "run", "sub-ed"),
    ]
    assert (report.redriven, report.released) == (3, 1)
    assert not holds_slot(store, "run", "gen")
    assert rt.leases.expired() == []  # the re-driven ones got a new lease
    assert {"reg", "sub-ing", "sub-ed"} == set(rt.admission.in_flight())


def test_redrive_expired_alone(store: JobStore, tmp_path: Path) -> None:
    rt = runtime(store, tmp_path, FakeProvider(), LEASE_S)
    make_run(store, "run", ["a", "b"])
    rt.admission.admit()
    advance(store, "b", "run", JobState.SUBMITTING, JobState.SUBMITTED, JobState.FAILED)
    time.sleep(LEASE_S + 0.1)
    app = Recorder()
    report = TickReport()
    redrive_expired(rt, app, report)
    assert app.sent == [(contract.TASK_SUBMIT, "run", "a")]
    assert (report.redriven, report.released) == (1, 0)  # b freed its slot by moving


def test_stalled_delivery_is_redriven_and_forgotten_once_done(
    store: JobStore, tmp_path: Path
) -> None:
    """A generated job holds no slot; a worker killed while delivering it would leave it
    generated for as long as the broker keeps the message (hours): its delivery lease
    brings it back."""
    rt = runtime(store, tmp_path, FakeProvider(), LEASE_S)
    make_run(store, "run", ["lost", "done", "moved"])
    rt.admission.admit()
    for job_id in ("lost", "done", "moved"):
        advance(store, job_id, "run", JobState.SUBMITTING, JobState.SUBMITTED)
        advance(store, job_id, "run", JobState.GENERATED)
    assert sorted(store.redis.zrange(keys.DELIVERING, 0, -1)) == [b"done", b"lost", b"moved"]
    advance(store, "done", "run", JobState.DELIVERED, cost=0.1)
    assert store.redis.zscore(keys.DELIVERING, "done") is None
    store.redis.hset(keys.job("moved"), "state", str(JobState.FAILED))  # a crash in between
    assert rt.leases.stalled_deliveries() == []

    time.sleep(LEASE_S + 0.1)
    assert sorted(rt.leases.stalled_deliveries()) == ["lost", "moved"]
    app = Recorder()
    report = tick(rt, app)
    assert app.sent == [(contract.TASK_DELIVER, "run", "lost")]
    assert report.redriven == 1
    assert rt.leases.stalled_deliveries() == []  # re-driven: a new lease
    assert store.redis.zscore(keys.DELIVERING, "moved") is None  # forgotten


# -- budgets ------------------------------------------------------------------------------


def test_budget_admits_what_it_covers_then_pauses_the_run(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=10, lease_s=60)
    make_run(store, "run", [("j1", 0, 0.4), ("j2", 0, 0.4), ("j3", 0, 0.4)], budget=1.0)
    make_run(store, "free", ["f1"])
    assert sorted(ids(adm.admit())) == ["f1", "j1", "j2"]
    assert adm.waiting("run") == 1
    run = store.run("run")
    assert run is not None and run.status == "paused"
    reason = store.redis.hget(keys.run("run"), "reason")
    assert isinstance(reason, bytes) and reason.startswith(b"budget:")
    assert adm.budgets.of("run") == {"cap": 1.0, "reserved": pytest.approx(0.8)}
    assert float(store.job("j1")["reserved_cost"]) == pytest.approx(0.4)


def test_budget_settles_with_the_job(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=10, lease_s=60)
    make_run(store, "run", [("ok", 0, 0.4), ("bad", 0, 0.4)], budget=5.0)
    adm.admit()
    assert adm.budgets.of("run")["reserved"] == pytest.approx(0.8)

    advance(store, "ok", "run", JobState.SUBMITTING, JobState.SUBMITTED)
    assert adm.budgets.of("run")["reserved"] == pytest.approx(0.8)  # still only reserved
    advance(store, "ok", "run", JobState.GENERATED)
    assert adm.budgets.of("run")["reserved"] == pytest.approx(0.4)
    assert adm.budgets.of("run")["spent"] == pytest.approx(0.4)  # charged at the estimate
    advance(store, "ok", "run", JobState.DELIVERED, cost=0.35)
    assert adm.budgets.of("run")["spent"] == pytest.approx(0.35)  # corrected to the real cost
    assert float(store.job("ok")["charged"]) == pytest.approx(0.35)

    advance(store, "bad", "run", JobState.SUBMITTING, JobState.SUBMITTED, JobState.FAILED)
    budget = adm.budgets.of("run")
    assert budget["reserved"] == pytest.approx(0.0, abs=1e-9)  # never generated: not paid
    assert budget["spent"] == pytest.approx(0.35)


def test_budget_room_freed_by_a_failure_admits_the_next(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=10, lease_s=60)
    make_run(store, "run", [("j1", 0, 0.5), ("j2", 0, 0.5), ("j3", 0, 0.5)], budget=1.0)
    assert ids(adm.admit()) == ["j1", "j2"]
    advance(store, "j1", "run", JobState.FAILED)
    store.set_run_status("run", "active")  # the operator resumes it
    assert ids(adm.admit()) == ["j3"]


# -- the sweep and the tick lock ----------------------------------------------------------


def test_sweep_renews_the_running_and_tracks_the_rest(store: JobStore, tmp_path: Path) -> None:
    provider = FakeProvider(active={"g-run"})
    rt = runtime(store, tmp_path, provider, lease_s=60)
    make_run(store, "run", ["running", "finished", "sending"])
    rt.admission.admit()
    advance(store, "running", "run", JobState.SUBMITTING)
    advance(store, "running", "run", JobState.SUBMITTED, generation_id="g-run")
    advance(store, "finished", "run", JobState.SUBMITTING)
    advance(store, "finished", "run", JobState.SUBMITTED, generation_id="g-done")
    advance(store, "sending", "run", JobState.SUBMITTING)
    before = {j: store.redis.zscore(keys.IN_FLIGHT, j) for j in rt.admission.in_flight()}

    app = Recorder()
    report = tick(rt, app)
    assert report.swept and provider.calls == 1  # one list call for all of them
    assert app.sent == [(contract.TASK_TRACK, "run", "finished")]
    assert report.finished == ["finished"]
    after = {j: store.redis.zscore(keys.IN_FLIGHT, j) for j in rt.admission.in_flight()}
    assert after["running"] > before["running"]  # type: ignore[operator]
    assert after["finished"] == before["finished"]
    assert after["sending"] == before["sending"]  # not submitted: nothing to list


def test_sweep_makes_no_call_with_nothing_submitted(store: JobStore, tmp_path: Path) -> None:
    provider = FakeProvider()
    rt = runtime(store, tmp_path, provider, lease_s=60)
    make_run(store, "run", ["j1"])
    report = tick(rt, Recorder())
    assert report.admitted == 1 and not report.swept and provider.calls == 0


def submitted_jobs(store: JobStore, rt: Runtime, run_id: str, job_ids: list[str]) -> None:
    """Admit ``job_ids`` and submit each as generation ``g-{job id}``."""
    assert sorted(ids(rt.admission.admit())) == sorted(job_ids)
    for job_id in job_ids:
        advance(store, job_id, run_id, JobState.SUBMITTING)
        advance(store, job_id, run_id, JobState.SUBMITTED, generation_id=f"g-{job_id}")


def test_the_sweep_tracks_finished_generations_itself_and_refills_their_slots(
    store: JobStore, tmp_path: Path
) -> None:
    """No hop between the sweep that sees a generation succeed and the refill of its
    slot: the sweep's own status call moves the job on, its delivery is sent and the
    next job is admitted and sent in the same tick, with no track message. One that
    failed goes to its track task, so that it fails in a task (Flower shows it)."""
    provider = FakeProvider(active={"g-running"}, ended={"g-done": "succeeded", "g-bad": "failed"})
    rt = runtime(store, tmp_path, provider, lease_s=60, sweep_tracks=8, poll_interval_s=10)
    rt.admission.max_in_flight = 3
    make_run(store, "run", ["done", "bad", "running", "next-1", "next-2"])
    submitted_jobs(store, rt, "run", ["done", "bad", "running"])

    app = Recorder()
    report = tick(rt, app)
    assert report.swept and sorted(report.finished) == ["bad", "done"]
    assert sorted(provider.got) == ["g-bad", "g-done"]
    assert store.job_state("done") is JobState.GENERATED
    assert store.job_state("bad") is JobState.SUBMITTED  # its task fails it
    assert sorted(app.sent) == [
        (contract.TASK_DELIVER, "run", "done"),
        (contract.TASK_SUBMIT, "run", "next-1"),
        (contract.TASK_TRACK, "run", "bad"),
    ]
    assert sorted(rt.admission.in_flight()) == ["bad", "next-1", "running"]


def test_the_sweep_tracks_at_most_its_share_and_queues_the_rest(
    store: JobStore, tmp_path: Path
) -> None:
    finished = ["a", "b", "c"]
    provider = FakeProvider(ended={f"g-{j}": "succeeded" for j in finished})
    rt = runtime(store, tmp_path, provider, lease_s=60, sweep_tracks=1, poll_interval_s=10)
    make_run(store, "run", finished)
    submitted_jobs(store, rt, "run", finished)

    app = Recorder()
    tick(rt, app)
    assert len(provider.got) == 1
    here = provider.got[0].removeprefix("g-")
    queued = sorted(j for j in finished if j != here)
    assert sorted(app.sent) == [(contract.TASK_DELIVER, "run", here)] + [
        (contract.TASK_TRACK, "run", j) for j in queued
    ]
    assert [store.job_state(j) for j in queued] == [JobState.SUBMITTED] * 2


def test_a_slow_provider_sends_the_rest_to_the_queue_after_half_an_interval(
    store: JobStore, tmp_path: Path
) -> None:
    """However many the setting allows, the sweep's own tracking stops after half a poll
    interval: a slow status call cannot hold up the tick."""
    finished = ["a", "b", "c"]
    provider = FakeProvider(ended={f"g-{j}": "succeeded" for j in finished}, get_s=0.15)
    rt = runtime(store, tmp_path, provider, lease_s=60, sweep_tracks=8, poll_interval_s=0.2)
    make_run(store, "run", finished)
    submitted_jobs(store, rt, "run", finished)

    app = Recorder()
    tick(rt, app)
    assert len(provider.got) == 1  # 0.15 s taken: past half of 0.2 s
    assert sorted(t for t, _run, _job in app.sent) == [
        contract.TASK_DELIVER,
        contract.TASK_TRACK,
        contract.TASK_TRACK,
    ]


def test_a_provider_error_in_the_sweep_sends_the_rest_to_the_queue_quietly(
    store: JobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    finished = ["a", "b"]
    caplog.set_level(logging.INFO, logger="worker.ticker")
    provider = FakeProvider(ended={}, get_error=TransientProviderError("provider down"))
    rt = runtime(store, tmp_path, provider, lease_s=60, sweep_tracks=8, poll_interval_s=10)
    make_run(store, "run", finished)
    submitted_jobs(store, rt, "run", finished)

    app = Recorder()
    tick(rt, app)
    assert len(provider.got) == 1  # one failed call: the rest are not tried
    assert sorted(app.sent) == [(contract.TASK_TRACK, "run", j) for j in finished]
    assert "provider down" in caplog.text and "Traceback" not in caplog.text


def test_a_step_that_breaks_in_the_sweep_goes_to_the_queue_with_the_rest(
    store: JobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    finished = ["a", "b"]
    provider = FakeProvider(ended={})  # every status call raises (a KeyError: a bug)
    rt = runtime(store, tmp_path, provider, lease_s=60, sweep_tracks=8)
    make_run(store, "run", finished)
    submitted_jobs(store, rt, "run", finished)

    app = Recorder()
    tick(rt, app)
    assert len(provider.got) == 1
    assert sorted(app.sent) == [(contract.TASK_TRACK, "run", j) for j in finished]
    assert "tracking it in the sweep failed" in caplog.text


def test_tick_once_is_one_tick_at_a_time(store: JobStore, tmp_path: Path) -> None:
    gate = threading.Event()
    provider = FakeProvider(active={"g-1"}, gate=gate)
    rt = runtime(store, tmp_path, provider, lease_s=60)
    make_run(store, "run", ["j1"])
    rt.admission.admit()
    advance(store, "j1", "run", JobState.SUBMITTING)
    advance(store, "j1", "run", JobState.SUBMITTED, generation_id="g-1")

    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(tick_once(rt, Recorder())))
    first.start()
    deadline = time.monotonic() + 5
    while provider.calls == 0:  # the first tick is inside its sweep, holding the lock
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert tick_once(rt, Recorder()) is None
    gate.set()
    first.join(5)
    assert results and results[0] is not None and results[0].swept
    assert store.redis.get(keys.TICK_LOCK) is None  # released
    assert tick_once(rt, Recorder()) is not None
