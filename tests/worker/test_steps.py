"""The pipeline's steps driven directly, without Celery: a fakeredis job store, the
simulator over HTTP in this process, a local output directory and the loopback input
server. Each test plays one message (or one crash) and checks the job's record, the
simulator's counters and what was stored.

Nothing here sleeps longer than a generation takes (the simulator's latency is 50-100
ms); waiting for the grace time of a lost enqueue is done by moving the runtime's
clock, never by sleeping.

A submit that adopts a generation ends its chain: from there the tick's sweep
(worker.ticker) watches every job in flight with one list call and sends a track task
for a generation that left the active list. ``Pipeline.follow`` plays that part with a
track task every poll interval while the job is submitted.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fakeredis
import pytest
import redis
from PIL import Image
from pydantic import SecretStr

from producer.jobs import JobSpec
from producer.manifest import ReadOptions
from producer.submit import validate_and_submit
from provider import errors as pe
from provider.client import OxenClient
from provider.models import CompletionEvent
from seedq import contract, keys
from seedq.admission import admission_for, budget_reason
from seedq.catalog import ModelCatalog
from seedq.contract import TASK_DELIVER, TASK_SUBMIT, TASK_TRACK, JobState
from seedq.dispatch import celery_sender
from seedq.settings import DEFAULT_MODEL, Settings
from seedq.store import JobStore
from simulator.config import SimConfig
from simulator.server import SimHandle, running_simulator
from storage.base import StoredObject, sha256_file
from storage.errors import StorageUnavailable
from storage.local import LocalStorage
from tests.fakes import FakeApp
from worker.call_results import CallResult
from worker.delivery import deliver_job, sidecar_key
from worker.errors import InvalidVideo, RunPaused
from worker.events import handle_event
from worker.inputs import InputRules, LoopbackInputPublisher, publish_inputs
from worker.job import DONE, Next
from worker.retry import RetryPolicy
from worker.runner import DELIVER, ENDED_DONE, SUBMIT, TRACK, Ending, StepEnd, run_step
from worker.runtime import Runtime, get_runtime, install_runtime, poll_throttle, submit_throttle
from worker.submitting import LIST_TRIES, RECHECK_S, grace_s, submit_job
from worker.tracking import track_job
from worker.verify import verify_video

API_KEY = "sk-steps-test-very-secret-key-0123456789"
LATENCY_S = (0.05, 0.1)
POLL_S = 0.05  # the settings' poll interval, and the longest sleep of these tests
RATE = "1000/s"  # submit and poll budgets no test waits for
DRIVE_LIMIT_S = 15.0  # a generation takes ~0.1 s; this bound only stops a broken loop
HTTP_TIMEOUT_S = 5.0
ROW = {"prompt": "a red mug turns slowly", "duration": "4", "resolution": "480p"}

Step = Callable[[Runtime, str, str], Next]
STEPS: dict[str, Step] = {TASK_SUBMIT: submit_job, TASK_TRACK: track_job, TASK_DELIVER: deliver_job}


@dataclass
class Clock:
    """Real time plus an offset a test may move (the runtime's clock, not the simulator's)."""

    offset_s: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


class RecordingStorage(LocalStorage):
    """A local directory that counts writes and can pretend to be full."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: Counter[str] = Counter()
        self.full = False

    def put_file(self, key: str, path: Path, *, sha256: str, content_type: str) -> StoredObject:
        self.calls["put_file"] += 1
        if self.full:
            raise StorageUnavailable(f"local output: cannot write {key}: no space left")
        return super().put_file(key, path, sha256=sha256, content_type=content_type)

    def put_json(self, key: str, data: dict[str, Any]) -> StoredObject:
        self.calls["put_json"] += 1
        if self.full:
            raise StorageUnavailable(f"local output: cannot write {key}: no space left")
        return super().put_json(key, data)


@dataclass
class FakeTask:
    """What a task of worker.tasks uses of itself: its name and its app."""

    name: str
    app: FakeApp = field(default_factory=FakeApp)


BY_TASK = {step.task: step for step in (SUBMIT, TRACK, DELIVER)}


def run_task(task: FakeTask, run_id: str, job_id: str) -> StepEnd:
    """What the Celery task named ``task.name`` does (worker.tasks), up to how it ends;
    tests/worker/test_tasks.py holds the mapping of that to the task's state."""
    return run_step(get_runtime(), celery_sender(task.app), BY_TASK[task.name], run_id, job_id)


@dataclass
class Pipeline:
    rt: Runtime
    sim: SimHandle
    storage: RecordingStorage
    publisher: LoopbackInputPublisher
    clock: Clock
    folder: Path
    messages: list[contract.JobMessage] = field(default_factory=list)

    # -- registering --------------------------------------------------------------------

    def submit_manifest(self, rows: list[dict[str, str]]) -> str:
        """Register jobs the way ``seedq submit`` does; returns the run id."""
        images = self.folder / "images"
        images.mkdir(exist_ok=True)
        Image.new("RGB", (64, 48), (200, 40, 40)).save(images / "red.png")
        fields = sorted({k for row in rows for k in row})
        lines = [",".join(fields)] + [",".join(row.get(f, "") for f in fields) for row in rows]
        manifest = self.folder / f"manifest-{len(self.messages)}.csv"
        manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
        opts = ReadOptions(default_model=DEFAULT_MODEL, allow_private_urls=True)
        _checked, done = validate_and_submit(
            [manifest], opts, ModelCatalog(), self.rt.store, self.send, admission=self.rt.admission
        )
        return done.run_id

    def send(
        self, task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0
    ) -> None:
        """The producer's task sender: the submit messages are kept, not sent."""
        self.messages.extend(messages)

    def one_job(self, job_id: str = "clip-1", **changes: str) -> str:
        """A run of one job (a local input image); returns the run id."""
        return self.submit_manifest(
            [{"id": job_id, "input_image": "images/red.png", **ROW, **changes}]
        )

    def register_direct(
        self, job_id: str, params: dict[str, Any], model: str = DEFAULT_MODEL
    ) -> str:
        """Register one job with JobStore.register, bypassing manifest validation."""
        run_id = f"run-{job_id}"
        spec = JobSpec(job_id, "direct", 1, model, params, f"{job_id}.mp4")
        self.rt.store.create_run(run_id, "direct", {})
        for _ in self.rt.store.register(run_id, [(job_id, spec.fingerprint, spec.to_record())]):
            pass
        self.rt.store.set_run_status(run_id, "active")
        assert [a.job_id for a in self.rt.admission.admit()] == [job_id]
        return run_id

    # -- reading ------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, str]:
        return self.rt.store.job(job_id)

    def state(self, job_id: str) -> JobState | None:
        return self.rt.store.job_state(job_id)

    def calls(self, job_id: str) -> int:
        return int(self.job(job_id).get("provider_calls", "0"))

    def stats(self) -> dict[str, Any]:
        return self.sim.stats()

    def assert_at_most_once(self, enqueued: int) -> None:
        stats = self.stats()
        assert (stats["enqueued"], stats["duplicate_enqueues"]) == (enqueued, 0), stats

    def retry_after_passed(self) -> None:
        """Forget the provider backoff a 429 set, as if its Retry-After had elapsed."""
        self.rt.store.redis.delete(keys.PROVIDER_BACKOFF)

    def lease_until(self, job_id: str) -> float | None:
        """When the job's in-flight lease expires (server seconds); None: holds no slot."""
        score = self.rt.store.redis.zscore(keys.IN_FLIGHT, job_id)
        return None if score is None else float(score)

    def assert_adopted(self, follow: Next, job_id: str) -> dict[str, str]:
        """A submit that adopted a generation: nothing follows (the sweep tracks it from
        here), the job is submitted, and its lease was renewed since its admission."""
        assert follow == DONE, follow
        job = self.job(job_id)
        assert job["state"] == JobState.SUBMITTED and job["generation_id"], job
        lease = self.lease_until(job_id)
        assert lease is not None, f"{job_id} holds no in-flight slot"
        assert lease > float(job["admitted_at"]) + self.rt.admission.lease_s
        return job

    # -- driving ------------------------------------------------------------------------

    def follow(self, run_id: str, job_id: str, first: Next, *, until: str | None = None) -> Next:
        """Run the chain of follow-ups from ``first`` as the queues would, until it ends
        (or the next task is ``until``). While the chain has ended with the job
        submitted, a track task every poll interval stands for the tick's sweep.
        Countdowns are capped at the poll interval."""
        follow = first
        deadline = time.monotonic() + DRIVE_LIMIT_S
        while True:
            task = follow.task
            if task is None:
                if self.state(job_id) is not JobState.SUBMITTED:
                    return follow
                task, follow = TASK_TRACK, Next(TASK_TRACK, POLL_S)  # the sweep
            if task == until:
                return follow
            assert time.monotonic() < deadline, f"{job_id} did not settle: {self.job(job_id)}"
            if follow.countdown_s:
                time.sleep(min(follow.countdown_s, POLL_S))
            follow = STEPS[task](self.rt, run_id, job_id)

    def until_generated(self, run_id: str, job_id: str) -> Next:
        """Submit (if needed) and poll until the next task would be delivery."""
        first = submit_job(self.rt, run_id, job_id)
        return self.follow(run_id, job_id, first, until=TASK_DELIVER)

    def move_to_submitting(self, run_id: str, job_id: str, *, started_at: float) -> dict[str, Any]:
        """What a worker does before enqueueing; a crash right after leaves exactly this."""
        params = json.loads(self.job(job_id)["spec"])["params"]
        sent = publish_inputs(params, self.publisher, InputRules())
        moved = self.rt.store.move(
            job_id,
            run_id,
            JobState.SUBMITTING,
            expect=[JobState.REGISTERED],
            sent_params=json.dumps(sent, sort_keys=True),
            submit_started_at=started_at,
        )
        assert moved.ok, moved
        return sent


@contextmanager
def pipeline_on(
    client: redis.Redis, tmp_path: Path, *, seed: int = 11, **sim_options: Any
) -> Iterator[Pipeline]:
    """The pipeline on the given Redis (fakeredis, or the real one), with its own
    simulator (``sim_options``: more of its SimConfig, e.g. ``history`` past
    generations), publisher and output directory."""
    config = SimConfig(latency_s=LATENCY_S, seed=seed, max_concurrency=8, **sim_options)
    with running_simulator(config) as sim, LoopbackInputPublisher() as publisher:
        settings = Settings(
            provider_url=sim.url,
            oxen_api_key=SecretStr(API_KEY),
            allow_private_urls=True,
            http_timeout_s=HTTP_TIMEOUT_S,
            poll_interval_s=POLL_S,
            output=str(tmp_path / "out"),
            submit_rate=RATE,
            poll_rate=RATE,
        )
        storage = RecordingStorage(tmp_path / "out")
        clock = Clock()
        provider = OxenClient.from_settings(settings)
        store = JobStore(client)
        rt = Runtime(
            settings=settings,
            store=store,
            provider=provider,
            storage=storage,
            publisher=publisher,
            policy=RetryPolicy(base_s=0.0, jitter=0.0),
            admission=admission_for(store, settings),
            submit_throttle=submit_throttle(store, settings),
            poll_throttle=poll_throttle(store, settings),
            clock=clock,
        )
        try:
            yield Pipeline(rt, sim, storage, publisher, clock, tmp_path)
        finally:
            provider.close()


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    with pipeline_on(fakeredis.FakeRedis(server=fakeredis.FakeServer()), tmp_path) as p:
        yield p


@pytest.fixture
def installed(pipeline: Pipeline) -> Iterator[Pipeline]:
    """The pipeline's runtime as the one worker.tasks uses; forgotten afterwards."""
    install_runtime(pipeline.rt)
    try:
        yield pipeline
    finally:
        install_runtime(None)


def faulty_enqueue(p: Pipeline, **faults: Any) -> None:
    """Apply ``faults`` to the simulator for the next enqueue only (lists stay healthy)."""
    real = p.rt.provider.enqueue
    defaults = SimConfig().model_dump()

    def enqueue(model: str, params: Any, **kw: Any) -> Any:
        p.rt.provider.enqueue = real  # type: ignore[method-assign]
        p.sim.configure(**faults)
        try:
            return real(model, params, **kw)
        finally:
            p.sim.configure(**{name: defaults[name] for name in faults})

    p.rt.provider.enqueue = enqueue  # type: ignore[method-assign]


# -- 1. the happy path ----------------------------------------------------------------------


def test_happy_path_delivers_video_and_sidecar_once(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    assert p.messages == [{"run_id": run_id, "job_id": "clip-1"}]
    assert p.state("clip-1") is JobState.REGISTERED

    follow = submit_job(p.rt, run_id, "clip-1")
    job = p.assert_adopted(follow, "clip-1")
    assert job["reconciled"] == "0" and job["provider_calls"] == "1"
    assert p.rt.store.job_for_generation(job["generation_id"]) == "clip-1"

    assert p.follow(run_id, "clip-1", follow, until=TASK_DELIVER) == Next(TASK_DELIVER)
    assert p.state("clip-1") is JobState.GENERATED
    assert p.lease_until("clip-1") is None  # the generation left the provider: slot freed
    assert deliver_job(p.rt, run_id, "clip-1") is DONE

    job = p.job("clip-1")
    assert job["state"] == JobState.DELIVERED
    video = p.storage.path("clip-1.mp4")
    assert job["output_uri"] == str(video)
    assert job["sha256"] == sha256_file(video)
    assert int(job["size_bytes"]) == video.stat().st_size
    info = verify_video(video, json.loads(job["sent_params"]))
    assert info.height == 480

    text = p.storage.path(sidecar_key("clip-1.mp4")).read_text(encoding="utf-8")
    assert API_KEY not in text and "sig=" not in text and "Bearer" not in text
    side = json.loads(text)
    assert side["job_id"] == "clip-1" and side["run_id"] == run_id
    assert side["model"] == DEFAULT_MODEL
    assert side["generation_id"] == job["generation_id"]
    assert side["params"]["prompt"] == ROW["prompt"] and side["params"]["duration"] == 4
    assert side["video"]["sha256"] == job["sha256"]
    assert side["video"]["size_bytes"] == video.stat().st_size
    assert side["video"]["duration_s"] == pytest.approx(4.0, abs=1.0)
    assert side["cost"]["estimated"] == float(job["cost"]) > 0
    assert (side["cost"]["billed"], side["cost"]["billed_status"]) == (None, "pending")
    assert side["warnings"] == [] and json.loads(job["warnings"]) == []
    # Its bill is due: the tick's biller asks the provider (worker.biller).
    assert p.rt.store.redis.zscore(keys.UNBILLED, "clip-1") is not None
    assert side["provider_calls"] == int(job["provider_calls"])
    assert {"created_at", "submit_started_at", "submitted_at", "generated_at"} <= set(
        side["timings"]
    )
    p.assert_at_most_once(1)

    # A redelivered deliver message finds the job delivered: no download, no write.
    writes, mtime = dict(p.storage.calls), video.stat().st_mtime_ns
    downloads = p.stats()["downloads"]
    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    assert dict(p.storage.calls) == writes == {"put_file": 1, "put_json": 1}
    assert video.stat().st_mtime_ns == mtime
    assert p.stats()["downloads"] == downloads == 1


# -- 2. a repeated submit message ----------------------------------------------------------


def test_duplicate_submit_message_enqueues_once(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    first = submit_job(p.rt, run_id, "clip-1")
    generation = p.assert_adopted(first, "clip-1")["generation_id"]
    assert submit_job(p.rt, run_id, "clip-1") is DONE
    assert p.job("clip-1")["generation_id"] == generation
    assert p.calls("clip-1") == 1
    p.assert_at_most_once(1)


# -- 3. a crash between the move to submitting and the enqueue -----------------------------


def test_crash_before_enqueue_is_absent_after_grace_and_sent_once(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    p.move_to_submitting(run_id, "clip-1", started_at=time.time() - grace_s(p.rt) - 60)

    follow = submit_job(p.rt, run_id, "clip-1")  # the redelivered message
    assert follow == Next(TASK_SUBMIT, 0.0)
    assert p.state("clip-1") is JobState.REGISTERED
    p.assert_at_most_once(0)

    job = p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")  # the resend
    assert job["reconciled"] == "0"
    assert int(job["provider_calls"]) == 2 + 1  # the active rows, a history page, the enqueue
    p.assert_at_most_once(1)


def test_crash_before_enqueue_waits_within_grace_then_resends(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    p.move_to_submitting(run_id, "clip-1", started_at=p.rt.now())

    # Inside the grace time the enqueue may still be in flight: look again later.
    assert submit_job(p.rt, run_id, "clip-1") == Next(TASK_SUBMIT, RECHECK_S)
    assert p.state("clip-1") is JobState.SUBMITTING
    p.assert_at_most_once(0)

    p.clock.offset_s = grace_s(p.rt) + 1
    assert submit_job(p.rt, run_id, "clip-1") == Next(TASK_SUBMIT, 0.0)
    assert p.state("clip-1") is JobState.REGISTERED
    p.clock.offset_s = 0.0
    p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")
    p.assert_at_most_once(1)


# -- 4. a crash after the enqueue reached the provider -------------------------------------


def test_crash_after_enqueue_adopts_the_generation(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    sent = p.move_to_submitting(run_id, "clip-1", started_at=p.rt.now())
    [created] = p.rt.provider.enqueue(DEFAULT_MODEL, sent)  # then the worker died

    follow = submit_job(p.rt, run_id, "clip-1")
    job = p.assert_adopted(follow, "clip-1")
    assert job["generation_id"] == created.generation_id and job["reconciled"] == "1"
    assert p.rt.store.job_for_generation(created.generation_id) == "clip-1"
    # The reconcile's lists, no enqueue: the active rows and one page of the history.
    assert int(job["provider_calls"]) == 2
    p.assert_at_most_once(1)

    # The adopted generation is delivered like any other.
    assert p.follow(run_id, "clip-1", follow) is DONE
    assert p.state("clip-1") is JobState.DELIVERED
    assert p.storage.stat("clip-1.mp4") is not None
    p.assert_at_most_once(1)


def test_generation_in_both_lists_is_one_candidate(pipeline: Pipeline) -> None:
    """A generation still in flight is in the active rows and in the history page the
    reconcile reads after them. It is still one generation: adopt it, do not fail the
    job for an operator."""
    p = pipeline
    run_id = p.one_job()
    sent = p.move_to_submitting(run_id, "clip-1", started_at=p.rt.now())
    p.sim.configure(latency_s=(1.0, 1.0))  # it stays processing while we look
    [created] = p.rt.provider.enqueue(DEFAULT_MODEL, sent)
    assert wait_for_status(p, created.generation_id, "processing") is None
    assert [g.generation_id for g in p.rt.provider.list(model=DEFAULT_MODEL).generations] == [
        created.generation_id
    ]
    job = p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")
    assert job["reconciled"] == "1"
    assert job["generation_id"] == created.generation_id
    p.assert_at_most_once(1)


# -- 5. the enqueue's answer is lost ------------------------------------------------------


def test_lost_enqueue_answer_is_reconciled_not_resent(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    faulty_enqueue(p, drop_after_rate=1.0)

    follow = submit_job(p.rt, run_id, "clip-1")
    assert follow == Next(TASK_SUBMIT, RECHECK_S)
    job = p.job("clip-1")
    assert job["state"] == JobState.SUBMITTING and "generation_id" not in job
    stats = p.stats()
    assert stats["faults"] == {"drop_after": 1} and stats["generations"] == 1
    p.assert_at_most_once(1)

    follow = submit_job(p.rt, run_id, "clip-1")  # the recheck
    job = p.assert_adopted(follow, "clip-1")
    assert job["reconciled"] == "1"
    assert int(job["provider_calls"]) == 1 + 2
    p.assert_at_most_once(1)


def test_reconcile_tries_a_failed_list_call_again_at_once(pipeline: Pipeline) -> None:
    """A reconcile makes several list calls in one pass (the active rows, then history
    pages). With every other call failing, it still decides in one pass: a failed pass
    would spend one of the job's retries, and a job whose generation may exist must not
    fail on a provider's noise."""
    p = pipeline
    run_id = p.one_job()
    faulty_enqueue(p, drop_after_rate=1.0)
    assert submit_job(p.rt, run_id, "clip-1") == Next(TASK_SUBMIT, RECHECK_S)
    calls = failing_lists(p, failing={1, 3, 5, 7})
    job = p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")
    assert calls == {"list": 2, "history": 2} and job["reconciled"] == "1"
    assert "submit_attempts" not in job  # no retry was spent
    p.assert_at_most_once(1)


def test_reconcile_gives_up_a_pass_when_a_list_call_keeps_failing(pipeline: Pipeline) -> None:
    """Tries are bounded: a list call failing every time ends the pass with the error
    (a retry later), and the job stays submitting, never sent blindly."""
    p = pipeline
    run_id = p.one_job()
    faulty_enqueue(p, drop_after_rate=1.0)
    submit_job(p.rt, run_id, "clip-1")
    p.clock.offset_s = grace_s(p.rt) + 1  # past the grace time: the list decides
    p.sim.configure(error_rate=1.0)
    with pytest.raises(pe.ServerError):
        submit_job(p.rt, run_id, "clip-1")
    assert p.state("clip-1") is JobState.SUBMITTING
    assert int(p.job("clip-1")["provider_calls"]) == 1 + LIST_TRIES
    p.assert_at_most_once(1)


def failing_lists(p: Pipeline, *, failing: set[int]) -> Counter[str]:
    """Make the list calls (active rows and history pages) numbered in ``failing`` (from
    1, both kinds in one sequence) answer 503; counts the calls of each kind."""
    calls = Counter[str]()

    def failing_call(kind: str, real: Any) -> Any:
        def call(**kw: Any) -> Any:
            calls[kind] += 1
            if calls.total() in failing:
                raise pe.ServerError("Simulated failure (HTTP 503)", status_code=503)
            return real(**kw)

        return call

    p.rt.provider.list = failing_call("list", p.rt.provider.list)  # type: ignore[method-assign]
    p.rt.provider.history = failing_call("history", p.rt.provider.history)  # type: ignore[method-assign]
    return calls


def test_interrupted_reconcile_resumes_where_it_stopped(pipeline: Pipeline) -> None:
    """A pass cut short (here every try of its history page failed) resumes at that
    page: started over each time, a pass of several turns would rarely finish on a
    contended budget, and each failed pass spends a retry."""
    p = pipeline
    run_id = p.one_job()
    faulty_enqueue(p, drop_after_rate=1.0)
    submit_job(p.rt, run_id, "clip-1")
    calls = failing_lists(p, failing=set(range(2, 2 + LIST_TRIES)))
    with pytest.raises(pe.ServerError):
        submit_job(p.rt, run_id, "clip-1")
    kept = json.loads(p.job("clip-1")["reconcile_pass"])
    assert kept["step"] == 1 and calls == {"list": 1, "history": LIST_TRIES}

    job = p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")
    assert calls == {"list": 1, "history": LIST_TRIES + 1}  # the page, not the active rows
    assert job["reconciled"] == "1" and "reconcile_pass" not in job
    p.assert_at_most_once(1)


def test_list_failures_count_across_waits_for_a_turn(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list that fails each time, with a wait for a turn after every failure, still
    ends the pass with its error after LIST_TRIES tries (a retry spent), rather than
    starting its tries over at every resume and never failing."""
    p = pipeline
    run_id = p.one_job()
    faulty_enqueue(p, drop_after_rate=1.0)
    submit_job(p.rt, run_id, "clip-1")
    calls = failing_lists(p, failing=set(range(1, 100)))
    turns = iter([0.0, 5.0] * LIST_TRIES)
    monkeypatch.setattr("worker.submitting.wait_turn", lambda _throttle: next(turns))
    for _ in range(LIST_TRIES - 1):
        assert submit_job(p.rt, run_id, "clip-1") == Next(TASK_SUBMIT, 5.0)
    with pytest.raises(pe.ServerError):
        submit_job(p.rt, run_id, "clip-1")
    assert calls == {"list": LIST_TRIES} and p.state("clip-1") is JobState.SUBMITTING
    p.assert_at_most_once(1)


def test_resumed_pass_begun_within_grace_proves_nothing_absent(pipeline: Pipeline) -> None:
    """Absence counts from the pass's first list: a pass begun while the send may still
    have been under way could have missed a generation created after its first lists.
    A later pass, begun after the grace time, decides."""
    p = pipeline
    run_id = p.one_job()
    p.move_to_submitting(run_id, "clip-1", started_at=p.rt.now())  # crashed: nothing sent
    failing_lists(p, failing=set(range(2, 2 + LIST_TRIES)))
    with pytest.raises(pe.ServerError):
        submit_job(p.rt, run_id, "clip-1")  # listed the active rows within the grace time
    p.clock.offset_s = grace_s(p.rt) + 1
    assert submit_job(p.rt, run_id, "clip-1") == Next(TASK_SUBMIT, RECHECK_S)
    assert p.state("clip-1") is JobState.SUBMITTING
    assert submit_job(p.rt, run_id, "clip-1") == Next(TASK_SUBMIT, 0.0)  # a fresh pass
    assert p.state("clip-1") is JobState.REGISTERED
    p.assert_at_most_once(0)


def test_reconcile_waits_out_a_429_without_spending_a_retry(pipeline: Pipeline) -> None:
    """A list call answered 429 is a wait of its Retry-After, like any turn of the
    budget, not a failed pass: the job stays submitting and comes back then."""
    p = pipeline
    run_id = p.one_job()
    faulty_enqueue(p, drop_after_rate=1.0)
    submit_job(p.rt, run_id, "clip-1")
    p.sim.configure(rate_limit_rate=1.0, retry_after_s=2)
    follow = submit_job(p.rt, run_id, "clip-1")
    assert follow.task == TASK_SUBMIT and 1.0 < follow.countdown_s <= 2.0, follow
    assert p.state("clip-1") is JobState.SUBMITTING

    p.sim.configure(rate_limit_rate=0.0)
    p.retry_after_passed()
    p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")
    p.assert_at_most_once(1)


def test_enqueue_outcome_unknown_is_raised_by_the_client(pipeline: Pipeline) -> None:
    """The client half of the lost answer: a dropped response is not a plain error."""
    p = pipeline
    p.sim.configure(drop_after_rate=1.0)
    params = {"prompt": "x", "input_image": "https://example.com/a.png"}
    with pytest.raises(pe.EnqueueOutcomeUnknown):
        p.rt.provider.enqueue(DEFAULT_MODEL, params)
    assert p.stats()["enqueued"] == 1


# -- 5b. an account with a long history -----------------------------------------------------

HISTORY = 3_000  # past generations of the job's model: three full pages of the history


@pytest.fixture
def long_history(tmp_path: Path) -> Iterator[Pipeline]:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    with pipeline_on(client, tmp_path, history=HISTORY) as p:
        yield p


def list_requests(p: Pipeline, before: dict[str, int]) -> dict[str, int]:
    """The simulator's list requests since ``before`` (its request counters)."""
    now = p.stats()["requests"]
    names = ("GET /api/ai/queue", "GET /api/ai/generations")
    return {name: now.get(name, 0) - before.get(name, 0) for name in names}


def test_reconcile_reads_one_history_page_however_long_the_history(
    long_history: Pipeline,
) -> None:
    """3,000 past generations (over 1,000 of this model): the reconcile lists the active rows and
    the history's first page, which reaches before the send, and adopts."""
    p = long_history
    run_id = p.one_job()
    sent = p.move_to_submitting(run_id, "clip-1", started_at=p.rt.now())
    [created] = p.rt.provider.enqueue(DEFAULT_MODEL, sent)  # then the worker died
    before = p.stats()["requests"]
    job = p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")
    assert job["generation_id"] == created.generation_id
    assert list_requests(p, before) == {"GET /api/ai/queue": 1, "GET /api/ai/generations": 1}
    # More of the model's generations than one page holds: one page was a choice.
    assert p.rt.provider.history(model=DEFAULT_MODEL).total_entries > 1000
    p.assert_at_most_once(1)


def test_absence_is_proved_with_one_history_page(long_history: Pipeline) -> None:
    p = long_history
    run_id = p.one_job()
    p.move_to_submitting(run_id, "clip-1", started_at=p.rt.now())  # crashed: nothing sent
    p.clock.offset_s = grace_s(p.rt) + 1
    before = p.stats()["requests"]
    assert submit_job(p.rt, run_id, "clip-1") == Next(TASK_SUBMIT, 0.0)
    assert p.state("clip-1") is JobState.REGISTERED
    assert list_requests(p, before) == {"GET /api/ai/queue": 1, "GET /api/ai/generations": 1}
    p.assert_at_most_once(0)


def test_reconcile_pages_on_past_a_busy_window(long_history: Pipeline) -> None:
    """1,100 generations of the model enqueued after the job's send fill the history's
    first page: the reconcile reads the second, finds the job's generation there, and
    stops, since that page reaches before the send."""
    p = long_history
    run_id = p.one_job()
    sent = p.move_to_submitting(run_id, "clip-1", started_at=p.rt.now())
    [created] = p.rt.provider.enqueue(DEFAULT_MODEL, sent)
    p.sim.configure(max_concurrency=1, latency_s=(5.0, 5.0))  # the others stay queued
    for n in range(1_100):
        p.rt.provider.enqueue(DEFAULT_MODEL, {**sent, "prompt": f"another clip {n}"})
    before = p.stats()["requests"]
    job = p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")
    assert job["generation_id"] == created.generation_id
    assert list_requests(p, before) == {"GET /api/ai/queue": 1, "GET /api/ai/generations": 2}


# -- 6. several candidates ----------------------------------------------------------------


def test_twin_jobs_do_not_adopt_the_same_generation(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.submit_manifest(
        [{"id": jid, "input_image": "images/red.png", **ROW} for jid in ("twin-a", "twin-b")]
    )
    now = p.rt.now()
    sent_a = p.move_to_submitting(run_id, "twin-a", started_at=now)
    sent_b = p.move_to_submitting(run_id, "twin-b", started_at=now)
    assert sent_a == sent_b
    [created] = p.rt.provider.enqueue(DEFAULT_MODEL, sent_a)  # one of the two arrived

    p.assert_adopted(submit_job(p.rt, run_id, "twin-a"), "twin-a")
    assert p.job("twin-a")["generation_id"] == created.generation_id

    # The other twin sees the generation taken; inside the grace time it waits.
    assert submit_job(p.rt, run_id, "twin-b") == Next(TASK_SUBMIT, RECHECK_S)
    job_b = p.job("twin-b")
    assert job_b["state"] == JobState.SUBMITTING and "generation_id" not in job_b
    assert p.rt.store.job_for_generation(created.generation_id) == "twin-a"

    # Past the grace time it is provably absent and sent on its own.
    p.clock.offset_s = grace_s(p.rt) + 1
    assert submit_job(p.rt, run_id, "twin-b") == Next(TASK_SUBMIT, 0.0)
    p.clock.offset_s = 0.0
    job_b = p.assert_adopted(submit_job(p.rt, run_id, "twin-b"), "twin-b")
    assert job_b["generation_id"] not in ("", created.generation_id)
    assert p.stats()["enqueued"] == 2


def test_twins_reconciling_at_once_claim_the_generation_once(pipeline: Pipeline) -> None:
    """Regression: two workers reconcile twin jobs at the same moment; both see the one
    generation unowned. Only the first claim may adopt it; the other looks again."""
    p = pipeline
    run_id = p.submit_manifest(
        [{"id": jid, "input_image": "images/red.png", **ROW} for jid in ("twin-a", "twin-b")]
    )
    now = p.rt.now()
    sent = p.move_to_submitting(run_id, "twin-a", started_at=now)
    p.move_to_submitting(run_id, "twin-b", started_at=now)
    [created] = p.rt.provider.enqueue(DEFAULT_MODEL, sent)
    real = p.rt.store.job_for_generation
    raced: list[Next] = []

    def owner_read_just_before_twin_a_adopts(generation_id: str) -> str | None:
        owner = real(generation_id)
        if not raced:  # twin-a's worker adopts between twin-b's check and its claim
            p.rt.store.job_for_generation = real  # type: ignore[method-assign]
            raced.append(submit_job(p.rt, run_id, "twin-a"))
        return owner

    p.rt.store.job_for_generation = owner_read_just_before_twin_a_adopts  # type: ignore[method-assign]
    follow_b = submit_job(p.rt, run_id, "twin-b")
    assert raced
    p.assert_adopted(raced[0], "twin-a")
    assert p.job("twin-a")["generation_id"] == created.generation_id
    assert p.rt.store.job_for_generation(created.generation_id) == "twin-a"
    assert follow_b == Next(TASK_SUBMIT, RECHECK_S)
    job_b = p.job("twin-b")
    assert job_b["state"] == JobState.SUBMITTING and "generation_id" not in job_b
    assert p.stats()["enqueued"] == 1


def test_two_unowned_matches_need_an_operator(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    sent = p.move_to_submitting(run_id, "clip-1", started_at=p.rt.now())
    ids = {p.rt.provider.enqueue(DEFAULT_MODEL, sent)[0].generation_id for _ in range(2)}

    ended = submit_job(p.rt, run_id, "clip-1")
    job = p.job("clip-1")
    assert ended == Next(failed=job["error"])  # its task ends in FAILURE, with the reason
    assert job["state"] == JobState.FAILED
    assert job["needs_operator"] == "1" and job["failed_step"] == "submit"
    assert "needs an operator" in job["error"]
    assert all(gid in job["error"] for gid in ids)
    assert "generation_id" not in job
    assert all(p.rt.store.job_for_generation(gid) is None for gid in ids)

    # A redelivered message changes nothing and sends nothing.
    assert submit_job(p.rt, run_id, "clip-1") is DONE
    assert p.stats()["enqueued"] == 2  # the two this test made
    assert p.state("clip-1") is JobState.FAILED


# -- 7./8. refused enqueues ---------------------------------------------------------------


def test_server_error_on_enqueue_goes_back_to_registered(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    faulty_enqueue(p, error_rate=1.0)

    with pytest.raises(pe.ServerError) as raised:
        submit_job(p.rt, run_id, "clip-1")
    assert isinstance(raised.value, pe.TransientProviderError)
    assert p.state("clip-1") is JobState.REGISTERED
    assert p.calls("clip-1") == 1 + 2  # the enqueue, then the lists that proved it absent
    stats = p.stats()
    assert stats["faults"] == {"server_error": 1} and stats["generations"] == 0
    p.assert_at_most_once(0)

    p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")  # the retry
    p.assert_at_most_once(1)


def test_server_error_with_list_down_stays_submitting(pipeline: Pipeline) -> None:
    """When the list fails too, nothing proves the job absent: it stays submitting and
    is reconciled later, never sent blindly."""
    p = pipeline
    run_id = p.one_job()
    p.sim.configure(error_rate=1.0)
    with pytest.raises(pe.ServerError):
        submit_job(p.rt, run_id, "clip-1")
    assert p.state("clip-1") is JobState.SUBMITTING
    with pytest.raises(pe.ServerError):
        submit_job(p.rt, run_id, "clip-1")  # the retry reconciles, and the list fails
    assert p.state("clip-1") is JobState.SUBMITTING

    # The 5xx was an answer, so nothing is in flight: once the list works, the job is
    # proved absent at once (no grace time) and sent again.
    p.sim.configure(error_rate=0.0)
    p.rt.store.redis.delete(keys.limiter("poll"))  # the breaker opened; its cooldown is over
    assert submit_job(p.rt, run_id, "clip-1") == Next(TASK_SUBMIT, 0.0)
    assert p.state("clip-1") is JobState.REGISTERED
    p.assert_at_most_once(0)
    p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")
    p.assert_at_most_once(1)


def test_server_error_while_the_list_must_wait_stays_scheduled(pipeline: Pipeline) -> None:
    """A settled 5xx is reconciled at once; when the list's budget makes it wait (here,
    the breaker is open for status and list calls), the submit step comes back later
    rather than ending with the job left in ``submitting`` and nothing scheduled."""
    p = pipeline
    run_id = p.one_job()
    for _ in range(p.rt.poll_throttle.failure_threshold):
        p.rt.poll_throttle.report(CallResult.FAILURE)
    faulty_enqueue(p, error_rate=1.0)

    follow = submit_job(p.rt, run_id, "clip-1")
    assert follow.task == TASK_SUBMIT and follow.countdown_s > 0, follow
    assert p.state("clip-1") is JobState.SUBMITTING
    assert p.job("clip-1")["send_settled"] == "1"

    p.rt.store.redis.delete(keys.limiter("poll"))  # the cooldown is over and it closed
    assert submit_job(p.rt, run_id, "clip-1") == Next(TASK_SUBMIT, 0.0)  # proved absent
    p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")
    p.assert_at_most_once(1)


def test_rate_limited_enqueue_carries_retry_after(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    p.sim.configure(rate_limit_rate=1.0, retry_after_s=7)

    with pytest.raises(pe.RateLimited) as raised:
        submit_job(p.rt, run_id, "clip-1")
    assert raised.value.retry_after_s == 7
    assert p.state("clip-1") is JobState.REGISTERED
    assert p.stats()["generations"] == 0
    p.assert_at_most_once(0)


# -- 9. a failed generation ---------------------------------------------------------------


def test_generation_failure_fails_the_job_with_the_reason(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    p.sim.configure(failure_rate=1.0)

    ended = p.until_generated(run_id, "clip-1")
    job = p.job("clip-1")
    assert ended == Next(failed=job["error"])  # its task ends in FAILURE, with the reason
    assert job["state"] == JobState.FAILED and job["failed_step"] == "generate"
    assert job["error"].startswith("generation failed: ")
    assert "simulated failure" in job["error"]
    assert p.storage.stat("clip-1.mp4") is None
    p.assert_at_most_once(1)


def test_content_filter_fails_the_job_with_the_reason(pipeline: Pipeline) -> None:
    p = pipeline
    image = f"{p.publisher.base_url}/people/face-photo.png"  # the filter reads the path
    params = {"prompt": "a smile", "input_image": image, "duration": 4, "resolution": "480p"}
    run_id = p.register_direct("face-1", params)

    ended = p.until_generated(run_id, "face-1")
    job = p.job("face-1")
    assert ended == Next(failed=job["error"])
    assert job["state"] == JobState.FAILED
    assert "Blocked by content filter" in job["error"]
    assert "input_image_has_face" in job["error"]
    p.assert_at_most_once(1)


# -- 10. insufficient credits -------------------------------------------------------------


def test_insufficient_credits_at_enqueue_pauses_and_keeps_job_registered(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    run_id = p.one_job()
    p.sim.configure(insufficient_credits=True)

    with pytest.raises(RunPaused, match="Insufficient credits"):
        submit_job(p.rt, run_id, "clip-1")
    assert p.state("clip-1") is JobState.REGISTERED
    assert p.stats()["generations"] == 0


def test_insufficient_credits_in_flight_fails_job_and_pauses(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    # Long enough that the switch below lands while the generation runs.
    p.sim.configure(latency_s=(0.5, 0.5))
    follow = submit_job(p.rt, run_id, "clip-1")
    p.sim.configure(insufficient_credits=True)

    with pytest.raises(RunPaused, match="Insufficient credits"):
        p.follow(run_id, "clip-1", follow)
    job = p.job("clip-1")
    assert job["state"] == JobState.FAILED and job["failed_step"] == "generate"
    assert "Insufficient credits" in job["error"]
    p.assert_at_most_once(1)


# -- 11./12./13. delivery -----------------------------------------------------------------


def test_expired_result_url_is_refreshed(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    p.sim.configure(url_ttl_s=0.5)
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    old_url = p.job("clip-1")["result_url"]
    expires = float(parse_qs(urlsplit(old_url).query)["expires"][0])
    time.sleep(max(0.0, expires - time.time() + 0.05))

    before = p.calls("clip-1")
    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    job = p.job("clip-1")
    assert job["state"] == JobState.DELIVERED
    assert job["result_url"] != old_url
    assert int(job["provider_calls"]) == before + 3  # refused download, GET, download
    assert p.stats()["requests"]["GET /_files/{file}"] == 2
    assert p.stats()["downloads"] == 1
    side = p.storage.get_json(sidecar_key("clip-1.mp4"))
    assert side is not None and side["provider_calls"] == int(job["provider_calls"])


def test_corrupt_video_fails_but_is_kept_in_quarantine(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an unplayable file fails, and even then the paid download is kept, with its
    reason, under the quarantine prefix; the failure says where (worker.delivery)."""
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)

    def junk(url: str, dest: Path, *, max_bytes: int, timeout_s: float | None = None) -> int:
        dest.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 40)
        return dest.stat().st_size

    monkeypatch.setattr(p.rt.provider, "download", junk)
    with pytest.raises(InvalidVideo, match=r"kept at .*quarantine/clip-1") as raised:
        deliver_job(p.rt, run_id, "clip-1")
    assert p.state("clip-1") is JobState.GENERATED  # the task layer fails it
    assert p.storage.stat("clip-1.mp4") is None
    assert p.storage.get_json(sidecar_key("clip-1.mp4")) is None
    assert dict(p.storage.calls) == {"put_file": 1, "put_json": 1}
    kept = p.job("clip-1")["quarantine_uri"]
    assert kept in str(raised.value) and Path(kept).read_bytes().startswith(b"\x00\x00\x00\x18")


def test_storage_full_is_transient_and_loses_nothing(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    p.storage.full = True

    with pytest.raises(StorageUnavailable) as raised:
        deliver_job(p.rt, run_id, "clip-1")
    assert not isinstance(raised.value, InvalidVideo)
    job = p.job("clip-1")
    assert job["state"] == JobState.GENERATED and job["result_url"]
    assert p.storage.stat("clip-1.mp4") is None

    p.storage.full = False
    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    assert p.state("clip-1") is JobState.DELIVERED
    assert p.storage.stat("clip-1.mp4") is not None
    assert p.storage.get_json(sidecar_key("clip-1.mp4")) is not None
    p.assert_at_most_once(1)


# -- 14. completion events ----------------------------------------------------------------


def wait_for_status(p: Pipeline, generation_id: str, status: str) -> str | None:
    """Poll the provider directly (not through the job) until the generation ends."""
    deadline = time.monotonic() + DRIVE_LIMIT_S
    while True:
        gen = p.rt.provider.get(generation_id)
        if gen.status == status:
            return gen.result_url
        assert gen.status in ("queued", "processing") and time.monotonic() < deadline, gen
        time.sleep(POLL_S / 5)


def test_completion_event_moves_to_generated_once(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    generation = p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")["generation_id"]
    url = wait_for_status(p, generation, "succeeded")
    event = CompletionEvent(generation_id=generation, status="succeeded", url=url)
    app = FakeApp()

    stranger = CompletionEvent(generation_id="not-ours", status="succeeded", url=url)
    assert handle_event(p.rt, celery_sender(app), stranger) is None
    assert app.sent == []

    assert handle_event(p.rt, celery_sender(app), event) == "clip-1"
    job = p.job("clip-1")
    assert job["state"] == JobState.GENERATED and job["result_url"] == url
    assert app.sent == [(TASK_DELIVER, {"run_id": run_id, "job_id": "clip-1"}, None)]

    assert handle_event(p.rt, celery_sender(app), event) == "clip-1"  # a repeated event
    assert len(app.sent) == 1
    assert track_job(p.rt, run_id, "clip-1") is DONE  # and the poll that comes late

    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    assert p.state("clip-1") is JobState.DELIVERED
    p.assert_at_most_once(1)


def test_failed_completion_event_fails_the_job_in_its_track_task(pipeline: Pipeline) -> None:
    """A failure comes to the job through a task (whose state Flower shows), not from
    the listener: the event sends the track task, whose status call fails the job."""
    p = pipeline
    p.sim.configure(failure_rate=1.0)
    run_id = p.one_job()
    generation = p.assert_adopted(submit_job(p.rt, run_id, "clip-1"), "clip-1")["generation_id"]
    wait_for_status(p, generation, "failed")
    app = FakeApp()
    event = CompletionEvent(generation_id=generation, status="failed", error="Bad prompt")
    assert handle_event(p.rt, celery_sender(app), event) == "clip-1"
    assert p.state("clip-1") is JobState.SUBMITTED
    assert app.sent == [(TASK_TRACK, {"run_id": run_id, "job_id": "clip-1"}, None)]

    end = run_step(p.rt, celery_sender(app), TRACK, run_id, "clip-1")
    job = p.job("clip-1")
    assert job["state"] == JobState.FAILED and "simulated failure" in job["error"]
    assert end == StepEnd(Ending.FAILED, job["error"])


# -- 15. the task layer -------------------------------------------------------------------


def test_task_retries_transient_error_with_countdown(installed: Pipeline) -> None:
    p = installed
    run_id = p.one_job()
    p.sim.configure(rate_limit_rate=1.0, retry_after_s=3)
    task = FakeTask(TASK_SUBMIT)
    message = {"run_id": run_id, "job_id": "clip-1"}

    end = run_task(task, run_id, "clip-1")
    assert task.app.sent == [(TASK_SUBMIT, message, 3.0)]  # Retry-After is the floor
    job = p.job("clip-1")
    assert job["state"] == JobState.REGISTERED
    assert job["submit_attempts"] == "1" and "submit_first_failure_at" in job
    assert "Too many requests" in job["last_error"]
    assert end == StepEnd(Ending.RETRY, f"attempt 1: {job['last_error']}", 3.0)
    # The Retry-After holds every worker's enqueues, not only this job's.
    assert 2.0 < p.rt.submit_throttle.acquire_or_wait_s() <= 3.0

    p.retry_after_passed()  # the retry's countdown
    assert run_task(task, run_id, "clip-1").ending is Ending.RETRY
    assert p.job("clip-1")["submit_attempts"] == "2"
    assert [countdown for *_, countdown in task.app.sent] == [3.0, 3.0]

    # Success resets the attempts; nothing follows (the sweep tracks the generation).
    p.sim.configure(rate_limit_rate=0.0)
    p.retry_after_passed()
    assert run_task(task, run_id, "clip-1") == ENDED_DONE
    job = p.assert_adopted(DONE, "clip-1")
    assert "submit_attempts" not in job and "submit_first_failure_at" not in job
    assert len(task.app.sent) == 2
    p.assert_at_most_once(1)


def test_task_waiting_out_a_long_countdown_keeps_its_slot(installed: Pipeline) -> None:
    """A Retry-After longer than the lease must not make the job look abandoned."""
    p = installed
    run_id = p.one_job()
    long_wait_s = p.rt.admission.lease_s * 3
    p.sim.configure(rate_limit_rate=1.0, retry_after_s=int(long_wait_s))
    task = FakeTask(TASK_SUBMIT)

    before = float(p.rt.store.redis.time()[0])
    run_task(task, run_id, "clip-1")
    [(_, _, countdown)] = task.app.sent
    assert countdown is not None and countdown >= p.rt.admission.lease_s  # as long as a lease
    lease = p.lease_until("clip-1")
    assert lease is not None and lease >= before + countdown + p.rt.admission.lease_s - 1
    assert p.rt.leases.expired() == []


def test_task_gives_up_after_max_attempts(installed: Pipeline) -> None:
    p = installed
    p.rt.policy = RetryPolicy(base_s=0.0, jitter=0.0, max_attempts=2)
    run_id = p.one_job()
    p.sim.configure(error_rate=1.0)  # enqueue and list both fail: it stays submitting
    task = FakeTask(TASK_SUBMIT)

    assert run_task(task, run_id, "clip-1").ending is Ending.RETRY
    assert len(task.app.sent) == 1 and p.state("clip-1") is JobState.SUBMITTING
    end = run_task(task, run_id, "clip-1")
    assert len(task.app.sent) == 1  # no third attempt
    job = p.job("clip-1")
    assert job["state"] == JobState.FAILED and job["failed_step"] == "submit"
    assert job["error"].startswith("gave up after 2 attempt(s): ")
    assert end == StepEnd(Ending.FAILED, job["error"])
    p.assert_at_most_once(0)


def test_task_time_budget_is_on_the_runtime_clock(installed: Pipeline) -> None:
    p = installed
    p.rt.policy = RetryPolicy(base_s=0.0, jitter=0.0, max_total_s=60.0)
    run_id = p.one_job()
    p.sim.configure(rate_limit_rate=1.0, retry_after_s=0)
    task = FakeTask(TASK_SUBMIT)
    run_task(task, run_id, "clip-1")
    assert len(task.app.sent) == 1
    p.clock.offset_s = 61.0
    assert run_task(task, run_id, "clip-1").ending is Ending.FAILED
    assert len(task.app.sent) == 1
    assert p.job("clip-1")["error"].startswith("gave up after 2 attempt(s): ")


def test_task_fails_job_on_permanent_provider_error(installed: Pipeline) -> None:
    p = installed
    params = {"prompt": "x", "input_image": "https://example.com/a.png"}
    run_id = p.register_direct("nomodel-1", params, model="no-such-model")
    task = FakeTask(TASK_SUBMIT)

    end = run_task(task, run_id, "nomodel-1")
    job = p.job("nomodel-1")
    assert job["state"] == JobState.FAILED and job["failed_step"] == "submit"
    assert "no-such-model" in job["error"]
    assert end == StepEnd(Ending.FAILED, job["error"])
    assert task.app.sent == []
    p.assert_at_most_once(0)


def test_task_fails_job_on_invalid_video(
    installed: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = installed
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)

    def junk(url: str, dest: Path, *, max_bytes: int, timeout_s: float | None = None) -> int:
        dest.write_bytes(b"garbage" * 100)
        return 700

    monkeypatch.setattr(p.rt.provider, "download", junk)
    task = FakeTask(TASK_DELIVER)
    end = run_task(task, run_id, "clip-1")
    job = p.job("clip-1")
    assert job["state"] == JobState.FAILED and job["failed_step"] == "deliver"
    assert end == StepEnd(Ending.FAILED, job["error"])
    assert job["quarantine_uri"] in job["error"] and "/quarantine/" in job["error"]
    assert task.app.sent == []
    assert p.storage.stat("clip-1.mp4") is None


def test_task_pauses_run_when_fatal(installed: Pipeline) -> None:
    p = installed
    run_id = p.one_job()
    p.sim.configure(insufficient_credits=True)
    task = FakeTask(TASK_SUBMIT)

    end = run_task(task, run_id, "clip-1")
    run = p.rt.store.run(run_id)
    assert run is not None and run.status == "paused"
    reason = p.rt.store.redis.hget(f"seedq:run:{run_id}", "reason")
    assert reason is not None and b"Insufficient credits" in reason
    assert end == StepEnd(Ending.PAUSED, f"run paused: {run.reason}")
    assert p.state("clip-1") is JobState.REGISTERED
    assert task.app.sent == []

    # A redelivered submit of the paused run leaves the job waiting.
    p.sim.configure(insufficient_credits=False)
    assert run_task(task, run_id, "clip-1") == ENDED_DONE  # nothing to do: SUCCESS
    assert p.state("clip-1") is JobState.REGISTERED and task.app.sent == []
    p.assert_at_most_once(0)


def test_task_success_runs_the_whole_chain(installed: Pipeline) -> None:
    p = installed
    run_id = p.one_job()
    task = FakeTask(TASK_SUBMIT)
    assert run_task(task, run_id, "clip-1") == ENDED_DONE
    deadline = time.monotonic() + DRIVE_LIMIT_S
    while task.app.sent or p.state("clip-1") is JobState.SUBMITTED:
        assert time.monotonic() < deadline
        if not task.app.sent:  # the sweep's track task, once per poll interval
            task.app.send_task(TASK_TRACK, {"run_id": run_id, "job_id": "clip-1"}, POLL_S)
        name, kwargs, countdown = task.app.sent.pop(0)
        time.sleep(min(countdown or 0.0, POLL_S))
        task = FakeTask(name, task.app)
        assert run_task(task, kwargs["run_id"], kwargs["job_id"]) == ENDED_DONE
    assert p.state("clip-1") is JobState.DELIVERED
    p.assert_at_most_once(1)


# -- 16. a paused run ---------------------------------------------------------------------


def test_submit_of_paused_run_sends_nothing(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    p.rt.store.pause_run(run_id, "operator says stop")

    assert submit_job(p.rt, run_id, "clip-1") is DONE
    job = p.job("clip-1")
    assert job["state"] == JobState.REGISTERED and "sent_params" not in job
    assert p.calls("clip-1") == 0
    p.assert_at_most_once(0)
    assert p.stats()["requests"] == {}


def test_message_of_another_run_is_ignored(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    assert submit_job(p.rt, "some-other-run", "clip-1") is DONE
    assert submit_job(p.rt, run_id, "no-such-job") is DONE
    assert p.state("clip-1") is JobState.REGISTERED
    p.assert_at_most_once(0)


def test_submit_of_a_run_paused_by_its_budget_sends_what_was_admitted(pipeline: Pipeline) -> None:
    """Admission pauses a run when its next job would pass the cap; the jobs admitted
    before that fit inside it (their estimates are reserved) and are sent all the same."""
    p = pipeline
    run_id = p.one_job()
    p.rt.store.pause_run(run_id, budget_reason(0.4, 1.0, 0.8))

    submit_job(p.rt, run_id, "clip-1")
    assert p.state("clip-1") is JobState.SUBMITTED
    p.assert_at_most_once(1)


def test_an_operator_pause_after_a_budget_pause_holds_the_admitted_jobs(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    run_id = p.one_job()
    p.rt.store.pause_run(run_id, budget_reason(0.4, 1.0, 0.8))
    p.rt.store.pause_run(run_id, "operator says stop")

    assert submit_job(p.rt, run_id, "clip-1") is DONE
    assert p.state("clip-1") is JobState.REGISTERED
    p.assert_at_most_once(0)
