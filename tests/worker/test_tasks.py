"""worker.tasks: how a task ends, which is what Flower shows. The step runner's verdict
(``worker.runner.StepEnd``) becomes SUCCESS, RETRY or FAILURE with the reason, and
nothing else: the runner has already recorded and sent everything. The mapping is
tested on its own, then through Celery's own tracer (``Task.apply``), whose states are
the ones a worker reports to Flower; tests/e2e/test_flower.py reads them from Flower."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from celery import Celery
from celery.exceptions import Retry

import worker.tasks
from seedq import contract
from seedq.contract import TASK_SUBMIT, TASK_TRACK, JobState
from seedq.dispatch import celery_sender
from seedq.logs import REDACTED, Redactor
from seedq.queueing import make_celery
from seedq.settings import Settings
from tests.fakes import FakeApp
from tests.worker.test_steps import DRIVE_LIMIT_S, POLL_S, Pipeline, pipeline_on
from worker.runner import ENDED_DONE, Ending, StepEnd
from worker.runtime import install_runtime
from worker.tasks import StepFailed, StepRetried, end_task

TASKS = (contract.TASK_SUBMIT, contract.TASK_TRACK, contract.TASK_DELIVER)
SECRET = "sk-tasks-test-secret-0123456789"

# -- the mapping --------------------------------------------------------------------------


def test_a_step_that_did_its_part_ends_in_success() -> None:
    end_task(ENDED_DONE, Redactor())  # returns: nothing raised, the task succeeds


def test_a_retry_ends_in_retry_with_the_reason_and_sends_nothing() -> None:
    with pytest.raises(Retry) as caught:
        end_task(StepEnd(Ending.RETRY, "attempt 2: HTTP 503 from the provider", 2.5), Redactor())
    retry = caught.value
    assert retry.when == 2.5
    assert isinstance(retry.exc, StepRetried)
    assert str(retry.exc) == "attempt 2: HTTP 503 from the provider"
    assert retry.sig is None  # Celery sends nothing: the runner sent the one retry message


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        (Ending.FAILED, "generation failed: Blocked by content filter"),
        (Ending.FAILED, "gave up after 5 attempt(s): HTTP 503"),
        (Ending.PAUSED, "run paused: Insufficient credits"),
    ],
)
def test_a_failed_job_or_a_paused_run_ends_in_failure_with_the_reason(
    ending: Ending, reason: str
) -> None:
    with pytest.raises(StepFailed) as caught:
        end_task(StepEnd(ending, reason), Redactor())
    assert str(caught.value) == reason


@pytest.mark.parametrize("ending", [Ending.RETRY, Ending.FAILED, Ending.PAUSED])
def test_no_secret_reaches_flower_through_a_reason(ending: Ending) -> None:
    leaky = StepEnd(ending, f"HTTP 500: echoed key={SECRET}, Authorization: Bearer abc123xyz", 1.0)
    with pytest.raises((Retry, StepFailed)) as caught:
        end_task(leaky, Redactor([SECRET]))
    shown = caught.value.exc if isinstance(caught.value, Retry) else caught.value
    assert SECRET not in str(shown) and "abc123xyz" not in str(shown)
    assert REDACTED in str(shown)


# -- the tasks as Celery runs them --------------------------------------------------------


@pytest.fixture
def app() -> Celery:
    """An app built as the workers build theirs, with the shared tasks bound to it."""
    built = make_celery(Settings(broker_url="memory://localhost/"))
    built.finalize()
    return built


@pytest.mark.parametrize("name", TASKS)
def test_a_failed_task_is_acknowledged_and_logged_without_a_traceback(
    app: Celery, name: str
) -> None:
    task = app.tasks[name]
    assert task.acks_late and task.reject_on_worker_lost  # a lost worker's task comes back
    # Celery 5.7 splits task_acks_on_failure_or_timeout; either way a FAILURE is acked.
    acks_on_failure = getattr(task, "acks_on_failure", task.acks_on_failure_or_timeout)
    assert acks_on_failure is True
    assert StepFailed in task.throws  # "raised expected": one log line, no traceback
    assert task.ignore_result


@pytest.fixture
def installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Pipeline, FakeApp]]:
    """A pipeline as the tasks' runtime; what the tasks send is recorded, not sent."""
    sent = FakeApp()
    monkeypatch.setattr(worker.tasks, "celery_sender", lambda _app: celery_sender(sent))
    with pipeline_on(fakeredis.FakeRedis(server=fakeredis.FakeServer()), tmp_path) as p:
        install_runtime(p.rt)
        try:
            yield p, sent
        finally:
            install_runtime(None)


def apply(app: Celery, name: str, run_id: str, job_id: str) -> Any:
    return app.tasks[name].apply(kwargs={"run_id": run_id, "job_id": job_id})


def test_celery_states_say_retry_then_success(
    app: Celery, installed: tuple[Pipeline, FakeApp]
) -> None:
    p, sent = installed
    run_id = p.one_job()
    p.sim.configure(rate_limit_rate=1.0, retry_after_s=3)

    result = apply(app, TASK_SUBMIT, run_id, "clip-1")
    assert result.state == "RETRY"
    assert isinstance(result.result, Retry) and result.result.when == 3.0
    assert "Too many requests" in str(result.result.exc)
    # Exactly one message: the runner's retry, with its countdown.
    assert sent.sent == [(TASK_SUBMIT, {"run_id": run_id, "job_id": "clip-1"}, 3.0)]

    p.sim.configure(rate_limit_rate=0.0)
    p.retry_after_passed()
    assert apply(app, TASK_SUBMIT, run_id, "clip-1").state == "SUCCESS"
    assert p.state("clip-1") is JobState.SUBMITTED and len(sent.sent) == 1


def test_celery_state_says_failure_with_the_jobs_reason(
    app: Celery, installed: tuple[Pipeline, FakeApp]
) -> None:
    p, sent = installed
    params = {"prompt": "x", "input_image": "https://example.com/a.png"}
    run_id = p.register_direct("nomodel-1", params, model="no-such-model")

    result = apply(app, TASK_SUBMIT, run_id, "nomodel-1")
    job = p.job("nomodel-1")
    assert job["state"] == JobState.FAILED
    assert result.state == "FAILURE"
    assert isinstance(result.result, StepFailed) and str(result.result) == job["error"]
    assert "no-such-model" in job["error"]
    assert sent.sent == []

    # The same message again (a duplicate) finds nothing to do.
    assert apply(app, TASK_SUBMIT, run_id, "nomodel-1").state == "SUCCESS"


def test_celery_state_says_failure_when_the_run_is_paused(
    app: Celery, installed: tuple[Pipeline, FakeApp]
) -> None:
    p, sent = installed
    run_id = p.one_job()
    p.sim.configure(insufficient_credits=True)

    result = apply(app, TASK_SUBMIT, run_id, "clip-1")
    assert result.state == "FAILURE"
    assert str(result.result).startswith("run paused: ")
    assert "Insufficient credits" in str(result.result)
    assert p.state("clip-1") is JobState.REGISTERED and sent.sent == []


def test_a_generation_that_failed_ends_its_track_task_in_failure(
    app: Celery, installed: tuple[Pipeline, FakeApp]
) -> None:
    """The track step fails the job itself (no exception): its task still says so."""
    p, _ = installed
    run_id = p.one_job()
    p.sim.configure(failure_rate=1.0)
    assert apply(app, TASK_SUBMIT, run_id, "clip-1").state == "SUCCESS"

    states = []
    deadline = time.monotonic() + DRIVE_LIMIT_S
    while p.state("clip-1") is JobState.SUBMITTED:  # the sweep's track task, each poll
        assert time.monotonic() < deadline, p.job("clip-1")
        time.sleep(POLL_S)
        result = apply(app, TASK_TRACK, run_id, "clip-1")
        states.append(result.state)
    job = p.job("clip-1")
    assert job["state"] == JobState.FAILED and job["failed_step"] == "generate"
    assert set(states[:-1]) <= {"SUCCESS"} and states[-1] == "FAILURE"
    assert str(result.result) == job["error"] and "simulated failure" in job["error"]

    # A duplicate track message finds the job failed already: nothing to do.
    assert apply(app, TASK_TRACK, run_id, "clip-1").state == "SUCCESS"
