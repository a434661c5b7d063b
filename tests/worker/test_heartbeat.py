"""Worker heartbeats, on fakeredis and on a real Redis: a process's heartbeat lapses when
it stops beating, what it held is re-driven by the next tick (each job once, by its
state, a held retry at its ETA), a live process's jobs are never re-driven however long
their leases would have run out, and a clean stop hands nothing over. Also the ticker's
cadence: it sweeps as often as the poll interval says, between one-second ticks."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis

from seedq import broker, contract, keys
from seedq.broker import BrokerView
from seedq.contract import JobState
from seedq.dispatch import Sender
from seedq.store import JobStore
from tests.worker.test_admission import FakeProvider, advance, make_run, runtime
from worker import heartbeat as heartbeat_module
from worker import ticker as ticker_module
from worker.heartbeat import (
    JOB_TASKS,
    Heartbeat,
    HeartbeatStep,
    _on_postrun,
    _on_receipt,
    _on_received,
    _on_return,
    celery_task_ids,
    hand_over,
    install_heartbeat,
)
from worker.runtime import Runtime
from worker.ticker import TICK_S, run_ticker, tick

HEARTBEAT_S = 0.3  # short enough to sleep past
LEASE_S = 0.3


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client)


@dataclass
class Sent:
    """A Sender that keeps (task, job id, countdown) of each message."""

    sent: list[tuple[str, str, float]] = field(default_factory=list)

    def __call__(
        self, task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0
    ) -> None:
        self.sent.extend((task, m["job_id"], countdown_s) for m in messages)


def beating_runtime(
    store: JobStore, tmp_path: Path, provider: FakeProvider | None = None
) -> Runtime:
    rt = runtime(store, tmp_path, provider or FakeProvider(), LEASE_S)
    rt.settings = rt.settings.model_copy(update={"heartbeat_s": HEARTBEAT_S})
    return rt


def beat_for(rt: Runtime, worker_id: str, seconds: float) -> None:
    """Beat as the heartbeat thread does (thrice per heartbeat) for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rt.leases.beat(worker_id, HEARTBEAT_S)
        time.sleep(HEARTBEAT_S / 3)


def test_a_beat_is_a_heartbeat_with_a_short_ttl(store: JobStore, tmp_path: Path) -> None:
    rt = beating_runtime(store, tmp_path)
    assert rt.leases.beat("w1", 10.0) is False  # first beat: nothing had lapsed
    ttl_ms = int(store.redis.pttl(keys.worker_alive("w1")))
    assert 9000 < ttl_ms <= 10000
    assert store.redis.smembers(keys.WORKERS) == {b"w1"}
    assert rt.leases.beat("w1", 10.0) is True


def test_live_worker_is_never_reaped_and_a_dead_ones_jobs_are_handed_out_once(
    store: JobStore, tmp_path: Path
) -> None:
    rt = beating_runtime(store, tmp_path)
    rt.leases.beat("live", HEARTBEAT_S)
    rt.leases.beat("dead", HEARTBEAT_S)
    rt.leases.hold("live", "t1", "a")
    rt.leases.hold("dead", "t2", "b")
    rt.leases.hold("dead", "t3", "c", eta_s=1234.5)
    rt.leases.hold("dead", "t4", "d")
    rt.leases.unhold("dead", "t4")  # its task ended
    assert rt.leases.reap_dead().workers == []

    time.sleep(HEARTBEAT_S / 2)
    rt.leases.beat("live", HEARTBEAT_S)
    time.sleep(HEARTBEAT_S / 2 + 0.1)
    reaped = rt.leases.reap_dead()
    assert reaped.workers == ["dead"]
    assert sorted((h.job_id, h.eta_s) for h in reaped.held) == [("b", 0.0), ("c", 1234.5)]
    assert rt.leases.reap_dead().workers == []  # handed out once: claimed
    rt.leases.forget_reaped(reaped)  # sent again
    assert rt.leases.reap_dead().workers == []
    assert store.redis.smembers(keys.WORKERS) == {b"live"}
    assert store.redis.exists(keys.worker_held("dead")) == 0


def test_what_a_tick_that_died_while_reaping_handed_out_is_handed_out_again(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick SIGKILLed between reaping a dead process and sending its jobs again sent
    nothing: its claim lapses and the next tick gets the same jobs."""
    monkeypatch.setattr(keys, "REAP_CLAIM_MS", 200)
    rt = beating_runtime(store, tmp_path)
    rt.leases.beat("dead", HEARTBEAT_S)
    rt.leases.hold("dead", "t1", "a")
    time.sleep(HEARTBEAT_S + 0.1)
    assert [h.job_id for h in rt.leases.reap_dead().held] == ["a"]  # then that tick died
    assert rt.leases.reap_dead().workers == []  # claimed meanwhile
    time.sleep(0.3)
    again = rt.leases.reap_dead()
    assert [h.job_id for h in again.held] == ["a"]

    rt.leases.hold("dead", "t2", "b")  # it was only late, and took another message
    rt.leases.forget_reaped(again)
    assert store.redis.hgetall(keys.worker_held("dead")) == {b"t2": b"0.000|b"}
    assert store.redis.smembers(keys.WORKERS) == {b"dead"}  # still holds one: looked at again


class FakeBroker:
    """A BrokerView over a fixed set of jobs named by messages queued in the broker,
    and of others received and not acknowledged."""

    def __init__(self, *job_ids: str, unacked: tuple[str, ...] = ()) -> None:
        self.named, self.unacked = set(job_ids), set(unacked)

    def job_ids(self) -> set[str]:
        return self.named | self.unacked

    def queued_job_ids(self) -> set[str]:
        return set(self.named)


def test_after_a_death_jobs_whose_message_is_nowhere_are_redriven_once(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed while taking a message from its queue leaves it in no queue, held
    by nobody: once a death is seen, the tick sends the steps of jobs whose message is
    nowhere, and only theirs. A message in kombu's unacknowledged record that no process
    holds is in no task's hands either: sent again too (kombu would keep it for hours)."""
    monkeypatch.setattr(ticker_module, "ORPHAN_CHECK_AFTER_S", 0.2)
    rt = beating_runtime(store, tmp_path)
    # "gen-unheld": its message in kombu's unacknowledged record, held by no process.
    rt.broker = cast(BrokerView, FakeBroker("queued", "gen-queued", unacked=("gen-unheld",)))
    make_run(
        store,
        "run",
        ["lost", "queued", "held", "sub-ed", "gen-lost", "gen-queued", "gen-unheld"],
    )
    rt.admission.admit()
    rt.leases.renew(rt.admission.in_flight(), ahead_s=60)  # leases are not what is tested
    advance(store, "sub-ed", "run", JobState.SUBMITTING, JobState.SUBMITTED)
    for job_id in ("gen-lost", "gen-queued", "gen-unheld"):
        advance(store, job_id, "run", JobState.SUBMITTING, JobState.SUBMITTED)
        advance(store, job_id, "run", JobState.GENERATED)
    rt.leases.touch_deliveries(["gen-lost", "gen-queued", "gen-unheld"], ahead_s=60)
    rt.leases.beat("live", HEARTBEAT_S)
    rt.leases.hold("live", "t1", "held")
    rt.leases.beat("dead", HEARTBEAT_S)  # dies holding nothing: what it took was lost

    app = Sent()
    assert tick(rt, app).redriven == 0  # no death seen yet: nothing is looked for
    time.sleep(HEARTBEAT_S + 0.1)
    rt.leases.beat("live", HEARTBEAT_S)
    assert tick(rt, app).reaped == ["dead"]
    assert app.sent == []  # not at once: what is being sent now must reach its queue
    time.sleep(0.3)
    rt.leases.beat("live", HEARTBEAT_S)
    report = tick(rt, app)
    assert sorted(app.sent) == [
        (contract.TASK_DELIVER, "gen-lost", 0.0),
        (contract.TASK_DELIVER, "gen-unheld", 0.0),
        (contract.TASK_SUBMIT, "lost", 0.0),
    ]
    assert report.redriven == 3
    app.sent.clear()
    assert tick(rt, app).redriven == 0 and app.sent == []  # once per death


def test_a_clean_stop_hands_nothing_over(store: JobStore, tmp_path: Path) -> None:
    rt = beating_runtime(store, tmp_path)
    rt.leases.beat("w", HEARTBEAT_S)
    rt.leases.hold("w", "t1", "a")
    rt.leases.retire("w")
    time.sleep(HEARTBEAT_S + 0.1)
    assert rt.leases.reap_dead().workers == []
    assert store.redis.smembers(keys.WORKERS) == set()


def stopping_worker(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Runtime, HeartbeatStep]:
    """A worker process's heartbeat step, started, holding three messages of jobs in
    flight: a delivery running, a submit waiting out its ETA, a track prefetched."""
    rt = beating_runtime(store, tmp_path)
    rt.settings = rt.settings.model_copy(update={"heartbeat_s": 30.0})  # no lapse here
    make_run(store, "run", ["running", "waiting", "prefetched"])
    rt.admission.admit()
    rt.leases.renew(rt.admission.in_flight(), ahead_s=60)  # leases are not what is tested
    advance(store, "running", "run", JobState.SUBMITTING, JobState.SUBMITTED)
    advance(store, "running", "run", JobState.GENERATED)
    advance(store, "prefetched", "run", JobState.SUBMITTING, JobState.SUBMITTED)
    monkeypatch.setattr(heartbeat_module, "Heartbeat", lambda wid: Heartbeat(wid, lambda: rt))
    step = HeartbeatStep(SimpleNamespace(hostname="w"))
    step.start(None)
    for task_id, task, job_id, eta_s in (
        ("t-run", contract.TASK_DELIVER, "running", 0.0),
        ("t-eta", contract.TASK_SUBMIT, "waiting", rt.now() + 30),
        ("t-pre", contract.TASK_TRACK, "prefetched", 0.0),
    ):
        _on_receipt(broker.Receipt(task_id, task, {"run_id": "run", "job_id": job_id}, eta_s))
    return rt, step


def test_a_warm_shutdown_that_handed_everything_back_retires(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, step = stopping_worker(store, tmp_path, monkeypatch)
    worker_id = step.heartbeat.worker_id
    _on_postrun(sender=SimpleNamespace(name=contract.TASK_DELIVER), task_id="t-run")  # finished
    step.stop(None)  # Celery: the pool has stopped
    assert store.redis.exists(keys.worker_alive(worker_id)) == 1  # not gone yet: the rest
    _on_return("t-eta")  # the broker connection closes: kombu restores what was not started
    _on_return("t-pre")
    hand_over()
    assert heartbeat_module._current is None
    assert store.redis.exists(keys.worker_alive(worker_id), keys.worker_held(worker_id)) == 0
    assert store.redis.smembers(keys.WORKERS) == set()
    app = Sent()
    assert (tick(rt, app).reaped, app.sent) == ([], [])


def test_what_a_shutdown_could_not_hand_back_is_sent_again_at_the_next_tick(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker away as the worker's channel closed: the ETA and the prefetched
    messages stay unacknowledged in it, where only the visibility timeout (hours) would
    bring them back. Their jobs wait for neither that nor a lease: the process says
    itself dead as it leaves, and the next tick sends their steps again."""
    rt, step = stopping_worker(store, tmp_path, monkeypatch)
    _on_postrun(sender=SimpleNamespace(name=contract.TASK_DELIVER), task_id="t-run")
    step.stop(None)
    hand_over()  # no return told: nothing was restored
    assert store.redis.exists(keys.worker_alive(step.heartbeat.worker_id)) == 0
    app = Sent()
    report = tick(rt, app)  # at once: no heartbeat to wait out
    assert report.reaped == [step.heartbeat.worker_id]
    assert sorted((task, job) for task, job, _ in app.sent) == [
        (contract.TASK_SUBMIT, "waiting"),
        (contract.TASK_TRACK, "prefetched"),
    ]
    (waiting,) = [countdown for _, job, countdown in app.sent if job == "waiting"]
    assert 25 < waiting <= 30  # still at its ETA


def test_slow_live_worker_is_never_second_guessed_then_its_death_is_seen_within_a_heartbeat(
    store: JobStore, tmp_path: Path
) -> None:
    """The lease of a job whose step a live process runs is renewed by its beats: however
    long past the lease, the tick re-drives nothing. Once the beats stop, the heartbeat
    lapses and the next tick sends the step again, once."""
    rt = beating_runtime(store, tmp_path)
    make_run(store, "run", ["slow", "idle"])
    rt.admission.admit()
    rt.leases.renew(["idle"], ahead_s=60)  # not what this test looks at
    advance(store, "slow", "run", JobState.SUBMITTING)
    rt.leases.hold("w", "task-1", "slow")

    app = Sent()
    beat_for(rt, "w", LEASE_S * 4)  # four leases long: the step is slow, not dead
    report = tick(rt, app)
    assert (report.redriven, report.reaped, app.sent) == (0, [], [])

    time.sleep(HEARTBEAT_S + 0.1)  # the process was killed: no beat since
    report = tick(rt, app)
    assert report.reaped == ["w"]
    assert app.sent == [(contract.TASK_SUBMIT, "slow", 0.0)]
    assert report.redriven == 1
    assert rt.leases.expired() == []  # a new lease: the lease path does not send it too
    assert store.redis.exists(keys.worker_held("w"), keys.worker_reaping("w")) == 0  # sent
    app.sent.clear()
    assert tick(rt, app).redriven == 0 and app.sent == []  # no storm


def test_dead_workers_jobs_are_redriven_by_state_each_once(store: JobStore, tmp_path: Path) -> None:
    rt = beating_runtime(store, tmp_path, FakeProvider(active={"g-1"}))  # the sweep leaves it
    make_run(store, "run", ["reg", "sub-ing", "sub-ed", "gen", "done", "later"])
    rt.admission.admit()
    rt.leases.renew(rt.admission.in_flight(), ahead_s=60)  # leases are not what is tested
    advance(store, "sub-ing", "run", JobState.SUBMITTING)
    advance(store, "sub-ed", "run", JobState.SUBMITTING)
    advance(store, "sub-ed", "run", JobState.SUBMITTED, generation_id="g-1")
    advance(store, "gen", "run", JobState.SUBMITTING, JobState.SUBMITTED)
    advance(store, "gen", "run", JobState.GENERATED)
    rt.leases.touch_deliveries(["gen"], ahead_s=60)
    advance(store, "done", "run", JobState.SUBMITTING, JobState.SUBMITTED, JobState.FAILED)
    rt.leases.beat("w", HEARTBEAT_S)
    for n, job_id in enumerate(["reg", "sub-ing", "sub-ed", "gen", "done", "gen"]):
        rt.leases.hold("w", f"t{n}", job_id)  # "gen": a duplicate message, re-driven once
    rt.leases.hold("w", "t-eta", "later", eta_s=rt.now() + 30)  # a retry waiting out its backoff

    time.sleep(HEARTBEAT_S + 0.1)
    app = Sent()
    report = tick(rt, app)
    assert report.reaped == ["w"]
    now_sent = sorted((task, job) for task, job, countdown in app.sent if countdown == 0)
    assert now_sent == [
        (contract.TASK_DELIVER, "gen"),
        (contract.TASK_SUBMIT, "reg"),
        (contract.TASK_SUBMIT, "sub-ing"),
        (contract.TASK_TRACK, "sub-ed"),
    ]
    (later,) = [s for s in app.sent if s[1] == "later"]
    assert later[0] == contract.TASK_SUBMIT and 25 < later[2] <= 30  # still at its ETA
    assert report.redriven == 5


def test_heartbeat_thread_keeps_a_process_alive_until_stopped(
    store: JobStore, tmp_path: Path
) -> None:
    rt = beating_runtime(store, tmp_path)
    heartbeat = Heartbeat("w", runtime=lambda: rt)
    stop = threading.Event()
    thread = threading.Thread(target=heartbeat.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for _ in range(6):  # two heartbeats long, looked at every third of one
            time.sleep(HEARTBEAT_S / 3)
            assert store.redis.exists(keys.worker_alive("w")) == 1
        assert rt.leases.reap_dead().workers == []
    finally:
        stop.set()
        thread.join(5)
    time.sleep(HEARTBEAT_S + 0.1)
    assert rt.leases.reap_dead().workers == ["w"]


def test_received_messages_are_held_until_their_task_ends(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = beating_runtime(store, tmp_path)
    heartbeat = Heartbeat("w", runtime=lambda: rt)
    monkeypatch.setattr(heartbeat_module, "_current", heartbeat)

    def request(task_id: str, name: str, job_id: str, eta: Any = None) -> Any:
        return SimpleNamespace(
            id=task_id, name=name, kwargs={"run_id": "r", "job_id": job_id}, eta=eta
        )

    _on_received(request=request("t1", contract.TASK_SUBMIT, "a"))
    _on_received(request=request("t2", contract.TASK_TRACK, "b"))
    _on_received(request=request("t3", "seedq.scheduled_run", "c"))  # not a job step
    held = store.redis.hgetall(keys.worker_held("w"))
    assert sorted(held) == [b"t1", b"t2"]
    assert store.redis.exists(keys.worker_alive("w")) == 1  # beaten before the first hold

    _on_postrun(sender=SimpleNamespace(name=contract.TASK_SUBMIT), task_id="t1")
    assert sorted(store.redis.hgetall(keys.worker_held("w"))) == [b"t2"]


def test_a_message_told_by_the_broker_is_held_once_and_not_again_at_task_received(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """seedq's Redis transport tells of a message before kombu records it unacked: a
    SIGKILL after that finds it held, so the tick re-drives it within seconds."""
    rt = beating_runtime(store, tmp_path)
    heartbeat = Heartbeat("w", runtime=lambda: rt)
    monkeypatch.setattr(heartbeat_module, "_current", heartbeat)
    kwargs = {"run_id": "r", "job_id": "a"}
    _on_receipt(broker.Receipt("t1", contract.TASK_DELIVER, kwargs, 0.0))
    assert store.redis.hgetall(keys.worker_held("w")) == {b"t1": b"0.000|a"}

    store.redis.delete(keys.worker_held("w"))  # to see that task_received writes nothing
    request = SimpleNamespace(id="t1", name=contract.TASK_DELIVER, kwargs=kwargs, eta=None)
    _on_received(request=request)
    assert store.redis.hgetall(keys.worker_held("w")) == {}


def test_the_heartbeat_listens_to_its_brokers_receipts(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import Celery

    told: list[Any] = []
    monkeypatch.setattr(broker, "on_receipt", lambda hook, names=(): told.append((hook, names)))
    monkeypatch.setattr(broker, "on_return", lambda hook: told.append(hook))
    install_heartbeat(Celery("seedq-test-heartbeat"))
    assert told == [(_on_receipt, JOB_TASKS), _on_return]


def test_without_a_heartbeat_nothing_is_held(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedded run's worker has no heartbeat: its jobs rely on their leases alone."""
    monkeypatch.setattr(heartbeat_module, "_current", None)
    request = SimpleNamespace(id="t1", name=contract.TASK_SUBMIT, kwargs={"job_id": "a"}, eta=None)
    _on_received(request=request)
    assert store.redis.smembers(keys.WORKERS) == set()


# -- the ticker's cadence -----------------------------------------------------------------


class CountingTicks:
    """Runs the real ticker against ``rt`` for a while; counts sweeps and full ticks."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.full = 0

    def run_for(self, seconds: float, send: Sender) -> None:
        stop = threading.Event()
        rt = self.rt
        original = rt.admission.admit

        def counting_admit(max_batch: int = 500) -> Any:
            self.full += 1  # admission runs once per full tick
            return original(max_batch)

        rt.admission.admit = counting_admit  # type: ignore[method-assign]
        thread = threading.Thread(target=run_ticker, args=(lambda: rt, send, stop), daemon=True)
        thread.start()
        time.sleep(seconds)
        stop.set()
        thread.join(5)


def test_the_ticker_sweeps_as_often_as_the_poll_interval_says(
    store: JobStore, tmp_path: Path
) -> None:
    provider = FakeProvider(active={"g-1"})
    rt = runtime(store, tmp_path, provider, lease_s=60)
    rt.settings = rt.settings.model_copy(update={"poll_interval_s": 0.1})
    make_run(store, "run", ["j1"])
    rt.admission.admit()
    advance(store, "j1", "run", JobState.SUBMITTING)
    advance(store, "j1", "run", JobState.SUBMITTED, generation_id="g-1")

    ticks = CountingTicks(rt)
    ticks.run_for(TICK_S * 2 + 0.5, Sent())
    assert provider.calls >= 10  # about 24 at 0.1 s; a sweep held to the tick makes 2
    assert ticks.full <= 4  # admission and the rest still once a second


def test_the_sweep_sends_no_second_track_for_a_job_a_worker_holds(
    store: JobStore, tmp_path: Path
) -> None:
    """Sweeping every interval, a finished generation whose track waits for a turn of the
    poll budget would get one more track per sweep; held, it gets none."""
    provider = FakeProvider()
    rt = runtime(store, tmp_path, provider, lease_s=60)
    make_run(store, "run", ["held", "free"])
    rt.admission.admit()
    for job_id in ("held", "free"):
        advance(store, job_id, "run", JobState.SUBMITTING)
        advance(store, job_id, "run", JobState.SUBMITTED, generation_id=f"g-{job_id}")
    rt.leases.beat("w", 10.0)
    rt.leases.hold("w", "track-1", "held")  # the last sweep's track, not run yet
    app = Sent()
    report = tick(rt, app)
    assert report.swept and report.finished == ["free"]
    assert app.sent == [(contract.TASK_TRACK, "free", 0.0)]
    rt.leases.unhold("w", "track-1")  # it ran, and the job is still submitted: tracked again
    time.sleep(0.05)  # the next sweep's interval
    assert sorted(tick(rt, app).finished) == ["free", "held"]


def test_with_a_long_poll_interval_every_wake_is_a_full_tick(
    store: JobStore, tmp_path: Path
) -> None:
    """Wakes a second apart, each a full tick, though the last one ended later than it
    began (a tick takes time)."""
    rt = runtime(store, tmp_path, FakeProvider(), lease_s=60)
    rt.settings = rt.settings.model_copy(update={"poll_interval_s": 15.0})
    ticks = CountingTicks(rt)
    ticks.run_for(TICK_S * 3 + 0.5, Sent())
    assert ticks.full == 3


def test_what_a_process_no_longer_has_in_hand_is_forgotten_at_the_second_beat(
    store: JobStore, tmp_path: Path
) -> None:
    """A task whose end could not be recorded (Redis away), or messages Celery dropped on
    a lost broker connection, would keep their jobs' leases renewed for ever."""
    rt = beating_runtime(store, tmp_path)
    in_hand = {"t1", "t2"}
    heartbeat = Heartbeat("w", runtime=lambda: rt, in_hand=lambda: set(in_hand))
    heartbeat.hold("t1", "a")
    heartbeat.hold("t2", "b")
    heartbeat.hold("t3", "c")  # recorded just before Celery takes it in hand
    assert heartbeat.prune() == set()
    in_hand |= {"t3"}
    in_hand -= {"t2"}  # dropped without its end recorded
    assert heartbeat.prune() == set()  # missing once: maybe not in hand yet
    assert heartbeat.prune() == {"t2"}
    assert rt.leases.held_tasks("w") == {"t1", "t3"}


class FakeRequest:
    def __init__(self, task_id: str) -> None:
        self.id = task_id


def test_the_tasks_in_a_celery_workers_hands() -> None:
    from celery.worker import state

    waiting, running = FakeRequest("t-eta"), FakeRequest("t-run")
    state.scheduled_requests.add(waiting)
    state.active_requests.add(running)
    try:
        assert {"t-eta", "t-run"} <= celery_task_ids()
    finally:
        state.scheduled_requests.discard(waiting)
        state.active_requests.discard(running)
