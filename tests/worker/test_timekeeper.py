"""The tick's time step on fakeredis: delayed starts, windows, and never overriding an
operator's pause."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import fakeredis
import pytest

from producer.submit import submit
from producer.timing import RunTiming, TimedStore
from provider.client import OxenClient
from seedq import contract, keys
from seedq.admission import Admission
from seedq.settings import Settings
from seedq.store import JobStore
from seedq.windows import window_reason
from storage.local import LocalStorage
from worker.inputs import NoInputPublisher
from worker.retry import RetryPolicy
from worker.runtime import Runtime, poll_throttle, submit_throttle
from worker.ticker import tick
from worker.timekeeper import apply_timing, finished

PARIS = ZoneInfo("Europe/Paris")
NIGHT = datetime(2026, 6, 1, 23, 0, tzinfo=PARIS).timestamp()
DAY = datetime(2026, 6, 1, 12, 0, tzinfo=PARIS).timestamp()
REASON = window_reason("22:00-06:00", "Europe/Paris")


class Job:
    def __init__(self, i: int) -> None:
        self.id, self.fingerprint = f"job-{i}", f"fp-{i}"

    def to_record(self) -> dict[str, object]:
        return {"prompt": "p", "est_cost": 1.0, "fingerprint": self.fingerprint}


def _submit(client: fakeredis.FakeRedis, timing: RunTiming, now_s: float) -> tuple[str, list[str]]:
    sent: list[contract.JobMessage] = []

    def send(task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0) -> None:
        sent.extend(messages)

    store = TimedStore(client, timing, clock=lambda: now_s)
    admission = Admission(store, max_in_flight=10, lease_s=60)
    done = submit(
        [Job(i) for i in range(3)],  # type: ignore[misc]
        store,
        send,
        admission=admission,
        name="t",
        manifests=["m.csv"],
    )
    return done.run_id, [m["job_id"] for m in sent]


def _status(client: fakeredis.FakeRedis, run_id: str) -> tuple[str, str]:
    info = JobStore(client).run(run_id)
    assert info is not None
    return info.status, info.reason


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_delayed_run_waits_then_starts(client: fakeredis.FakeRedis) -> None:
    run_id, sent = _submit(client, RunTiming(start_at=DAY + 600), DAY)
    assert sent == [] and _status(client, run_id) == ("scheduled", "")
    assert client.hget(keys.run(run_id), "start_at") == str(DAY + 600).encode()
    assert Admission(JobStore(client), max_in_flight=10, lease_s=60).admit() == []
    assert apply_timing(client, DAY + 599) == []
    assert [c.status for _, c in apply_timing(client, DAY + 600)] == ["active"]
    assert len(Admission(JobStore(client), max_in_flight=10, lease_s=60).admit()) == 3


def test_window_pauses_and_resumes_its_own_pause_only(client: fakeredis.FakeRedis) -> None:
    timing = RunTiming(window="22:00-06:00", tz="Europe/Paris")
    run_id, sent = _submit(client, timing, DAY)  # submitted at noon: held at once
    assert sent == [] and _status(client, run_id) == ("paused", REASON)
    apply_timing(client, NIGHT)
    assert _status(client, run_id) == ("active", "")
    apply_timing(client, DAY + 86400)
    assert _status(client, run_id) == ("paused", REASON)
    JobStore(client).pause_run(run_id, "paused by an operator")
    apply_timing(client, NIGHT + 86400)
    assert _status(client, run_id) == ("paused", "paused by an operator")


def test_inside_window_submits_at_once(client: fakeredis.FakeRedis) -> None:
    run_id, sent = _submit(client, RunTiming(window="22:00-06:00", tz="Europe/Paris"), NIGHT)
    assert len(sent) == 3 and _status(client, run_id) == ("active", "")
    assert client.sismember(keys.TIMED_RUNS, run_id)


def test_finished_and_cancelled_runs_are_forgotten(client: fakeredis.FakeRedis) -> None:
    run_id, _ = _submit(client, RunTiming(window="22:00-06:00", tz="Europe/Paris"), NIGHT)
    client.hset(keys.run(run_id), "status", "cancelled")
    apply_timing(client, DAY)
    assert not client.sismember(keys.TIMED_RUNS, run_id)
    assert _status(client, run_id) == ("cancelled", "")


@pytest.mark.parametrize(
    ("status", "counts", "total", "done"),
    [
        ("active", {"delivered": 2, "failed": 1}, 3, True),
        ("active", {"delivered": 2, "submitted": 1}, 3, False),
        ("scheduled", {}, 0, False),
        ("registering", {"delivered": 3}, 3, False),
        ("cancelled", {}, 3, True),
    ],
)
def test_finished(status: str, counts: dict[str, int], total: int, done: bool) -> None:
    assert finished(status, counts, total) is done


class Recorder:
    """A Sender that keeps (task, job id) of each message."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def __call__(
        self, task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0
    ) -> None:
        self.sent.extend((task, m["job_id"]) for m in messages)


def test_the_tick_starts_a_scheduled_run_and_admits_its_jobs(
    client: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    run_id, _ = _submit(client, RunTiming(start_at=DAY + 30), DAY)
    now = [DAY]
    settings = Settings(submit_rate="1000/s", poll_rate="1000/s", poll_interval_s=3600)
    store = JobStore(client)
    rt = Runtime(
        settings=settings,
        store=store,
        provider=cast(OxenClient, None),
        storage=LocalStorage(tmp_path),
        publisher=NoInputPublisher(),
        policy=RetryPolicy(base_s=0.0, jitter=0.0),
        admission=Admission(store, max_in_flight=10, lease_s=60),
        submit_throttle=submit_throttle(store, settings),
        poll_throttle=poll_throttle(store, settings),
        clock=lambda: now[0],
    )
    client.set(keys.NEXT_SWEEP, DAY + 10_000)  # no sweep in this test
    send = Recorder()
    assert tick(rt, send).admitted == 0 and send.sent == []
    now[0] = DAY + 30
    assert tick(rt, send).admitted == 3
    assert sorted(job for _task, job in send.sent) == ["job-0", "job-1", "job-2"]
    assert _status(client, run_id) == ("active", "")
