"""Running one job step and turning what it says into the next message, with no Celery
in sight: a follow-up task, a retry after a backoff, a failed job, or a paused run.

A step raises by outcome (``seedq.errors``): transient errors are retried until the
retry policy gives up, a job failure fails that job, a run-fatal error pauses its run.
Follow-ups and retries are sent before the message that ran the step is acknowledged
(``acks_late``): a crash in between can only duplicate a message, and every step is a
compare-and-set on the job's state, so a duplicate finds nothing to do.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from seedq import contract
from seedq.contract import TERMINAL_STATES, JobState
from seedq.dispatch import Sender, admit_and_send
from seedq.errors import JobFailed, RunFatal, TransientError
from seedq.logs import job_context
from worker.delivery import deliver_job
from worker.job import Next
from worker.retry import next_delay
from worker.runtime import Runtime
from worker.submitting import submit_job
from worker.tracking import track_job

log = logging.getLogger(__name__)
NOT_TERMINAL = [s for s in JobState if s not in TERMINAL_STATES]


@dataclass(frozen=True, slots=True)
class JobStep:
    """One step of a job's pipeline and the task that runs it."""

    name: str  # in the job's record: ``{name}_attempts``, ``failed_step``
    task: str  # ``contract.TASK_*``: what a retry sends again
    run: Callable[[Runtime, str, str], Next]
    # Its success may free an in-flight slot (a track step moves a job to generated);
    # every failure may, since a failed or paused job gives its slot back.
    frees_slot: bool = False
    # Its success may leave the job where it was (a generation still running), so its
    # retry counters are cleared here; other steps' are cleared by the move forward
    # itself (seedq/lua/transition.lua).
    may_stay: bool = False


SUBMIT = JobStep("submit", contract.TASK_SUBMIT, submit_job)
TRACK = JobStep("track", contract.TASK_TRACK, track_job, frees_slot=True, may_stay=True)
DELIVER = JobStep("deliver", contract.TASK_DELIVER, deliver_job)


def run_step(rt: Runtime, send: Sender, step: JobStep, run_id: str, job_id: str) -> None:
    """Run ``step`` for one job, send what comes next, and refill a slot it freed."""
    freed = True  # unless the step says otherwise, look for a slot to refill
    try:
        with job_context(run_id, job_id):  # log lines below carry the ids (JSON logs)
            freed = _run(rt, send, step, run_id, job_id)
    finally:
        if freed:
            admit_and_send(rt.admission, send)  # now rather than at the next tick


def fail_job(rt: Runtime, run_id: str, job_id: str, step: str, reason: str) -> None:
    rt.store.move(
        job_id, run_id, JobState.FAILED, expect=NOT_TERMINAL, error=reason, failed_step=step
    )
    log.warning("job %s failed at %s: %s", job_id, step, reason)


def hold_leases(rt: Runtime, job_id: str, countdown_s: float) -> None:
    """A job coming back after a countdown keeps its slot and delivery leases for it:
    otherwise a countdown longer than a lease (a long Retry-After, a late retry) would
    look like a dead worker, and the job would be re-driven beside its own message."""
    if countdown_s > 0:
        rt.leases.renew([job_id], ahead_s=countdown_s)
        rt.leases.touch_deliveries([job_id], ahead_s=countdown_s)


def _run(rt: Runtime, send: Sender, step: JobStep, run_id: str, job_id: str) -> bool:
    """Run one step; True when the job may have given its in-flight slot back."""
    try:
        follow = step.run(rt, run_id, job_id)
    except TransientError as exc:
        return _retry_later(rt, send, step, run_id, job_id, exc)
    except JobFailed as exc:
        fail_job(rt, run_id, job_id, step.name, str(exc))
        return True
    except RunFatal as exc:
        rt.store.pause_run(run_id, str(exc))
        log.error("run %s paused: %s", run_id, exc)
        return True
    if step.may_stay:
        rt.store.clear_failures(job_id, step.name)
    if follow.task:
        hold_leases(rt, job_id, follow.countdown_s)  # first: no gap for the tick to re-drive
        send(follow.task, [_message(run_id, job_id)], follow.countdown_s)
    return step.frees_slot


def _retry_later(
    rt: Runtime, send: Sender, step: JobStep, run_id: str, job_id: str, exc: TransientError
) -> bool:
    """Send the step again after a backoff; True when out of retries (the job failed)."""
    attempts, first = rt.store.count_failure(job_id, step.name, rt.now())
    delay = next_delay(
        rt.policy,
        attempt=attempts,
        elapsed_s=rt.now() - first,
        retry_after_s=exc.retry_after_s,
        rand=random.random(),
    )
    if delay is None:
        fail_job(rt, run_id, job_id, step.name, f"gave up after {attempts} attempt(s): {exc}")
        return True
    rt.store.update_job(job_id, last_error=str(exc)[:500])
    log.info("job %s: %s failed (%s); retry %d in %.1fs", job_id, step.name, exc, attempts, delay)
    hold_leases(rt, job_id, delay)
    send(step.task, [_message(run_id, job_id)], delay)
    return False


def _message(run_id: str, job_id: str) -> contract.JobMessage:
    return {"run_id": run_id, "job_id": job_id}
