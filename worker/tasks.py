"""The Celery tasks: thin. Each decodes its ids and hands one step to
``worker.runner.run_step``, with the runtime and a sender on this app; what follows
(a next task, a retry, a failed job, a paused run) is decided, recorded and sent there.

What is left here is how the task ends, so that Flower shows what happened
(:func:`end_task`): a retry ends in RETRY, a failed job or a paused run in FAILURE with
the reason, anything else in SUCCESS. The retry message is the runner's, sent before
this one is acknowledged; raising ``Retry`` only marks the task, it sends nothing. A
task that ends in FAILURE is acknowledged, not redelivered (``task_acks_on_failure``,
``seedq.queueing``): its job or run already records the failure.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry

from seedq import contract
from seedq.dispatch import celery_sender
from seedq.logs import Redactor, log_secrets
from worker.runner import DELIVER, SUBMIT, TRACK, Ending, JobStep, StepEnd, run_step
from worker.runtime import get_runtime


class StepFailed(Exception):
    """The task's job failed, or its run was paused; the message is the reason."""


class StepRetried(Exception):
    """The transient error a retried task met; the message is the reason."""


def _task(name: str) -> Any:
    # `throws`: a failed job is ordinary work; Celery logs it in one line, no traceback.
    return shared_task(
        bind=True, name=name, acks_late=True, ignore_result=True, throws=(StepFailed,)
    )


def _run(task: Task, step: JobStep, run_id: str, job_id: str) -> None:
    rt = get_runtime()
    end = run_step(rt, celery_sender(task.app), step, run_id, job_id)
    if end.ending is not Ending.DONE:  # most tasks: nothing to say, nothing to redact
        # The reasons are scrubbed where they are made; Flower is not behind the log
        # redaction, so it gets the same last line of defence.
        end_task(end, Redactor(log_secrets(rt.settings, os.environ)))


def end_task(end: StepEnd, redact: Redactor) -> None:
    """Return (SUCCESS) or raise what makes the task's state say how the step ended."""
    if end.ending is Ending.DONE:
        return
    reason = redact(end.reason)
    if end.ending is Ending.RETRY:
        raise Retry(exc=StepRetried(reason), when=round(end.countdown_s, 3))
    raise StepFailed(reason)


@_task(contract.TASK_SUBMIT)
def submit(self: Task, run_id: str, job_id: str) -> None:
    """Send one job to the provider, at most once."""
    _run(self, SUBMIT, run_id, job_id)


@_task(contract.TASK_TRACK)
def track(self: Task, run_id: str, job_id: str) -> None:
    """Check one generation's status; re-queues itself while it runs."""
    _run(self, TRACK, run_id, job_id)


@_task(contract.TASK_DELIVER)
def deliver(self: Task, run_id: str, job_id: str) -> None:
    """Download, verify and store one finished video."""
    _run(self, DELIVER, run_id, job_id)


from worker import scheduled as _scheduled  # noqa: E402, F401  (registers seedq.scheduled_run)
