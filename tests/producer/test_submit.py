"""Registering and enqueueing a run: on fakeredis for the rules, on a real Redis broker
for the messages themselves."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from producer.errors import ManifestError
from producer.manifest import ReadOptions
from producer.submit import SubmitResult, validate_and_submit
from seedq import contract, keys
from seedq.admission import Admission
from seedq.catalog import ModelCatalog
from seedq.contract import JobState
from seedq.dispatch import celery_sender
from seedq.queueing import make_celery
from seedq.settings import Settings
from seedq.store import Decision, JobStore

Write = Callable[[str, str | bytes], Path]
OPTS = ReadOptions(default_model="bytedance-seedance-2-0-image-to-video")
MANIFEST = "prompt,input_image,id\n" + "".join(f"p{i},images/a.png,job-{i}\n" for i in range(7))


class ListSender:
    def __init__(self) -> None:
        self.sent: list[contract.JobMessage] = []

    def __call__(
        self, task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0
    ) -> None:
        assert task == contract.TASK_SUBMIT
        self.sent.extend(messages)


def submit_(paths: list[Path], *args: Any, **kw: Any) -> SubmitResult:
    return validate_and_submit(paths, *args, **kw)[1]


@pytest.fixture
def store() -> JobStore:
    return JobStore(fakeredis.FakeRedis())


def test_submit_registers_and_enqueues(write: Write, store: JobStore) -> None:
    path = write("m.csv", MANIFEST)
    sender = ListSender()
    result = submit_([path], OPTS, ModelCatalog(), store, sender, name="night")
    assert result.enqueued == 7 and result.counts[Decision.NEW] == 7
    assert [m["job_id"] for m in sender.sent] == [f"job-{i}" for i in range(7)]
    assert all(m["run_id"] == result.run_id for m in sender.sent)
    run = store.run(result.run_id)
    assert run is not None
    assert (run.name, run.status, run.total, run.counts) == (
        "night",
        "active",
        7,
        {"registered": 7},
    )
    job = store.job("job-3")
    assert job["state"] == "registered" and job["run_id"] == result.run_id
    spec = json.loads(job["spec"])
    assert spec["params"]["prompt"] == "p3" and spec["output_key"] == "job-3.mp4"


def test_resubmit_skips_delivered_and_leaves_started_jobs_alone(
    write: Write, store: JobStore
) -> None:
    path = write("m.csv", MANIFEST)
    first_sender = ListSender()
    first = submit_([path], OPTS, ModelCatalog(), store, first_sender)
    assert len(first_sender.sent) == 7  # all admitted: the default cap is above 7
    move = store.move
    S = JobState
    move("job-0", first.run_id, S.DELIVERED, expect=[S.REGISTERED])
    move("job-1", first.run_id, S.FAILED, expect=[S.REGISTERED], error="boom")
    move("job-2", first.run_id, S.SUBMITTED, expect=[S.REGISTERED])
    sender = ListSender()
    second = submit_([path], OPTS, ModelCatalog(), store, sender)
    c = second.counts
    counts = (c[Decision.DONE], c[Decision.NEW], c[Decision.ACTIVE], c[Decision.PENDING])
    assert counts == (1, 1, 1, 4)
    # Only the failed job is sent again; the pending ones already hold a slot and a
    # message, so the broker never holds two for one job.
    assert [m["job_id"] for m in sender.sent] == ["job-1"]
    assert store.job("job-1")["run_id"] == second.run_id  # failed job moved to the new run
    assert store.job("job-3")["run_id"] == first.run_id  # pending job stays where it was
    assert store.run_job_ids(second.run_id) == ["job-1"]


def test_cap_bounds_messages_and_waiting_jobs_start_in_priority_order(
    write: Write, store: JobStore
) -> None:
    rows = "".join(f"p{i},images/a.png,job-{i},{i % 3}\n" for i in range(9))
    path = write("m.csv", "prompt,input_image,id,priority\n" + rows)
    sender = ListSender()
    admission = Admission(store, max_in_flight=3, lease_s=60)
    result = submit_([path], OPTS, ModelCatalog(), store, sender, admission=admission)
    assert result.enqueued == 9 and result.started == 3
    # Highest priority first, then file order.
    assert [m["job_id"] for m in sender.sent] == ["job-2", "job-5", "job-8"]
    assert admission.waiting(result.run_id) == 6
    store.move("job-5", result.run_id, JobState.FAILED, expect=[JobState.REGISTERED])
    assert [a.job_id for a in admission.admit()] == ["job-1"]
    assert admission.admit() == []  # full again


def test_force_redoes_delivered(write: Write, store: JobStore) -> None:
    path = write("m.csv", MANIFEST)
    first = submit_([path], OPTS, ModelCatalog(), store, ListSender())
    store.move("job-0", first.run_id, JobState.DELIVERED, expect=[JobState.REGISTERED])
    sender = ListSender()
    result = submit_([path], OPTS, ModelCatalog(), store, sender, force=True)
    assert result.counts[Decision.NEW] == 1
    assert "job-0" in [m["job_id"] for m in sender.sent]


@pytest.mark.parametrize(("ended", "force"), [(JobState.DELIVERED, True), (JobState.FAILED, False)])
def test_registering_again_into_its_own_run_moves_its_tally(
    store: JobStore, ended: JobState, force: bool
) -> None:
    """A resumed run (or --force) registers a job into the run that already counts it:
    its old state's tally moves to registered, so the run does not read as over."""
    specs = [("job-0", "fp", {"prompt": "p"}), ("job-1", "fp1", {"prompt": "q"})]
    store.create_run("r1", "run", {})
    list(store.register("r1", specs))
    store.move("job-0", "r1", ended, expect=[JobState.REGISTERED])
    list(store.register("r1", specs, force=force))
    info = store.run("r1")
    assert info is not None
    assert {k: v for k, v in info.counts.items() if v} == {"registered": 2}
    assert store.run_job_ids("r1") == ["job-0", "job-1"]


def test_changed_parameters_of_delivered_id_are_reported(write: Write, store: JobStore) -> None:
    submit_([write("m.csv", MANIFEST)], OPTS, ModelCatalog(), store, ListSender())
    store.redis.hset(keys.job("job-0"), "state", "delivered")
    changed = write("m.csv", MANIFEST.replace("p0,", "p0 but different,"))
    result = submit_([changed], OPTS, ModelCatalog(), store, ListSender())
    assert result.changed == ["job-0"]


def test_invalid_manifest_writes_and_sends_nothing(write: Write, store: JobStore) -> None:
    path = write("m.csv", "prompt,input_image\np,images/a.png\n,images/a.png\n")
    sender = ListSender()
    with pytest.raises(ManifestError) as caught:
        validate_and_submit([path], OPTS, ModelCatalog(), store, sender)
    assert [(p.line, p.field) for p in caught.value.problems] == [(3, "prompt")]
    assert sender.sent == [] and store.redis.dbsize() == 0


def test_priority_override_is_recorded(write: Write, store: JobStore) -> None:
    result = submit_(
        [write("m.csv", MANIFEST)], OPTS, ModelCatalog(), store, ListSender(), priority=50
    )
    assert json.loads(store.job("job-0")["spec"])["priority"] == 50
    assert store.run(result.run_id).meta["priority"] == 50  # type: ignore[union-attr]


@pytest.mark.redis
def test_enqueue_on_real_redis_broker(
    write: Write, real_redis: redis.Redis, real_redis_url: str
) -> None:
    """The messages land in the submit queue of a real Redis broker, as Celery sends them."""
    broker = real_redis_url
    settings = Settings(broker_url=broker, redis_url=broker)
    app = make_celery(settings)
    store = JobStore(real_redis)
    result = submit_([write("m.csv", MANIFEST)], OPTS, ModelCatalog(), store, celery_sender(app))
    raw = real_redis.lrange(contract.QUEUE_SUBMIT, 0, -1)
    assert len(raw) == 7
    bodies = []
    for item in raw:
        envelope = json.loads(item)
        assert envelope["headers"]["task"] == contract.TASK_SUBMIT
        assert envelope["content-type"] == "application/json"
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert args == []
        bodies.append(kwargs)
    assert sorted(b["job_id"] for b in bodies) == [f"job-{i}" for i in range(7)]
    assert {b["run_id"] for b in bodies} == {result.run_id}
    assert all(set(b) == {"run_id", "job_id"} for b in bodies)
    app.close()


def test_a_pause_during_registration_is_kept(store: JobStore) -> None:
    store.create_run("r1", "night", {})
    store.pause_run("r1", "paused by an operator")
    assert store.activate_run("r1", enqueued=3) is False
    assert store.run_status("r1") == "paused"
    store.create_run("r2", "day", {})
    assert store.activate_run("r2") is True and store.run_status("r2") == "active"


def test_a_runs_webhooks_are_kept_in_its_record(write: Write, store: JobStore) -> None:
    path = write("m.csv", MANIFEST)
    hooks = ["https://hooks.example.com/a", "https://hooks.example.com/b?channel=ops"]
    told = submit_([path], OPTS, ModelCatalog(), store, ListSender(), notify=hooks)
    assert store.run(told.run_id).meta["notify"] == hooks  # type: ignore[union-attr]
    quiet = submit_([path], OPTS, ModelCatalog(), store, ListSender())
    assert "notify" not in store.run(quiet.run_id).meta  # type: ignore[union-attr]


def test_each_job_is_hashed_once_from_validation_to_registration(
    write: Write, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fingerprint costs a JSON dump and a SHA-256: computed when the job is
    registered, not again for the spool (which keeps no fingerprint)."""
    from producer import jobs

    hashed: list[str] = []
    real = jobs.content_hash

    def counted(model: str, params: dict[str, Any], output: str) -> str:
        hashed.append(output)
        return real(model, params, output)

    monkeypatch.setattr(jobs, "content_hash", counted)
    path = write("m.csv", MANIFEST)  # explicit ids: no hash for an id either
    result = submit_([path], OPTS, ModelCatalog(), store, ListSender())
    assert result.enqueued == 7
    assert sorted(hashed) == sorted(f"job-{i}.mp4" for i in range(7))
    assert store.job("job-2")["fingerprint"] == real(
        "bytedance-seedance-2-0-image-to-video",
        json.loads(store.job("job-2")["spec"])["params"],
        "job-2.mp4",
    )
