"""The Celery tasks: thin. Each decodes its ids and hands one step to
``worker.runner.run_step``, with the runtime and a sender on this app; what follows
(a next task, a retry, a failed job, a paused run) is decided there.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from seedq import contract
from seedq.dispatch import celery_sender
from worker.runner import DELIVER, SUBMIT, TRACK, JobStep, run_step
from worker.runtime import get_runtime


def _task(name: str) -> Any:
    return shared_task(bind=True, name=name, acks_late=True, ignore_result=True)


def _run(task: Task, step: JobStep, run_id: str, job_id: str) -> None:
    run_step(get_runtime(), celery_sender(task.app), step, run_id, job_id)


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
