"""The Celery tasks: thin. Each decodes its ids, runs one step (plain functions in
worker.submitting / tracking / delivery), and turns the outcome into the next message:
a follow-up task, a retry with backoff, a failed job, or a paused run.

Follow-ups and retries are new messages sent before this one is acknowledged
(``acks_late``): a crash in between can only duplicate a message, and every step is a
compare-and-set on the job's state, so a duplicate finds nothing to do.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task

from seedq import contract
from seedq.contract import TERMINAL_STATES, JobState
from seedq.errors import JobFailed, RunFatal, TransientError
from seedq.logs import job_context
from worker.delivery import deliver_job
from worker.job import Next
from worker.retry import next_delay
from worker.runtime import Runtime, get_runtime
from worker.submitting import submit_job
from worker.tracking import track_job

log = logging.getLogger(__name__)
Step = Callable[[Runtime, str, str], Next]
NOT_TERMINAL = [s for s in JobState if s not in TERMINAL_STATES]
# Steps whose success may have freed a slot (a track step moves a job to generated).
REFILLING_STEPS = frozenset({"track"})


def send(task: Task, name: str, run_id: str, job_id: str, countdown_s: float = 0.0) -> None:
    message: contract.JobMessage = {"run_id": run_id, "job_id": job_id}
    task.app.send_task(name, kwargs=dict(message), countdown=countdown_s or None)


def fail_job(rt: Runtime, run_id: str, job_id: str, step: str, reason: str) -> None:
    rt.store.move(
        job_id, run_id, JobState.FAILED, expect=NOT_TERMINAL, error=reason, failed_step=step
    )
    log.warning("job %s failed at %s: %s", job_id, step, reason)


def run_step(task: Task, step_name: str, step: Step, run_id: str, job_id: str) -> None:
    rt = get_runtime()
    freed = True  # unless the step says otherwise, look for a slot to refill
    try:
        with job_context(run_id, job_id):  # log lines below carry the ids (JSON logs)
            freed = _run_step(task, rt, step_name, step, run_id, job_id)
    finally:
        if freed:
            refill(task, rt)


def refill(task: Task, rt: Runtime) -> None:
    """Give freed slots to waiting jobs now rather than at the next tick."""
    for admitted in rt.admission.admit():
        send(task, contract.TASK_SUBMIT, admitted.run_id, admitted.job_id)


def _run_step(
    task: Task, rt: Runtime, step_name: str, step: Step, run_id: str, job_id: str
) -> bool:
    """Run one step; True when the job may have given its in-flight slot back."""
    try:
        follow = step(rt, run_id, job_id)
    except TransientError as exc:
        return _retry_later(task, rt, step_name, run_id, job_id, exc)
    except JobFailed as exc:
        fail_job(rt, run_id, job_id, step_name, str(exc))
        return True
    except RunFatal as exc:
        rt.store.pause_run(run_id, str(exc))
        log.error("run %s paused: %s", run_id, exc)
        return True
    if step_name == "track":
        # A track step can succeed without moving the job; other steps' counters are
        # cleared by the move forward itself (seedq/lua/transition.lua).
        _reset_attempts(rt, job_id, step_name)
    if follow.task:
        hold_leases(rt, job_id, follow.countdown_s)  # first: no gap for the tick to re-drive
        send(task, follow.task, run_id, job_id, follow.countdown_s)
    return step_name in REFILLING_STEPS


def _retry_later(
    task: Task, rt: Runtime, step_name: str, run_id: str, job_id: str, exc: TransientError
) -> bool:
    """Send the step again after a backoff; True when out of retries (the job failed)."""
    attempts, first = rt.store.count_failure(job_id, step_name, rt.now())
    delay = next_delay(
        rt.policy,
        attempt=attempts,
        elapsed_s=rt.now() - first,
        retry_after_s=exc.retry_after_s,
        rand=random.random(),
    )
    if delay is None:
        fail_job(rt, run_id, job_id, step_name, f"gave up after {attempts} attempt(s): {exc}")
        return True
    rt.store.update_job(job_id, last_error=str(exc)[:500])
    log.info("job %s: %s failed (%s); retry %d in %.1fs", job_id, step_name, exc, attempts, delay)
    hold_leases(rt, job_id, delay)
    send(task, task.name, run_id, job_id, delay)
    return False


def hold_leases(rt: Runtime, job_id: str, countdown_s: float) -> None:
    """A job coming back after a countdown keeps its slot and delivery leases for it:
    otherwise a countdown longer than a lease (a long Retry-After, a late retry) would
    look like a dead worker, and the job would be re-driven beside its own message."""
    if countdown_s > 0:
        rt.leases.renew([job_id], ahead_s=countdown_s)
        rt.leases.touch_deliveries([job_id], ahead_s=countdown_s)


def _reset_attempts(rt: Runtime, job_id: str, step_name: str) -> None:
    rt.store.clear_failures(job_id, step_name)


def _task(name: str) -> Any:
    return shared_task(bind=True, name=name, acks_late=True, ignore_result=True)


@_task(contract.TASK_SUBMIT)
def submit(self: Task, run_id: str, job_id: str) -> None:
    """Send one job to the provider, at most once."""
    run_step(self, "submit", submit_job, run_id, job_id)


@_task(contract.TASK_TRACK)
def track(self: Task, run_id: str, job_id: str) -> None:
    """Check one generation's status; re-queues itself while it runs."""
    run_step(self, "track", track_job, run_id, job_id)


@_task(contract.TASK_DELIVER)
def deliver(self: Task, run_id: str, job_id: str) -> None:
    """Download, verify and store one finished video."""
    run_step(self, "deliver", deliver_job, run_id, job_id)


from worker import scheduled as _scheduled  # noqa: E402, F401  (registers seedq.scheduled_run)
