"""Running one job step and turning what it says into the next message, with no Celery
in sight: a follow-up task, a retry after a backoff, a failed job, or a paused run.

A step raises by outcome (``seedq.errors``): transient errors are retried until the
retry policy gives up, a job failure fails that job, a run-fatal error pauses its run.
Follow-ups and retries are sent before the message that ran the step is acknowledged
(``acks_late``): a crash in between can only duplicate a message, and every step is a
compare-and-set on the job's state, so a duplicate finds nothing to do.

:func:`run_step` returns how the step ended (:class:`StepEnd`), after everything above
is done and sent; ``worker.tasks`` only maps it to the task's state in Flower (RETRY,
FAILURE, SUCCESS), so that mapping can neither send nor lose a message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

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


class Ending(StrEnum):
    """How a step ended, which is what its task shows (Flower): SUCCESS, RETRY or FAILURE."""

    DONE = "done"  # did its part, or found nothing to do (a duplicate, a stale message)
    RETRY = "retry"  # a transient error: the step was sent again, after ``countdown_s``
    FAILED = "failed"  # the job failed here (or ran out of retries), with the reason
    PAUSED = "paused"  # a run-fatal error paused the job's run, with the reason


@dataclass(frozen=True, slots=True)
class StepEnd:
    """What :func:`run_step` did, already recorded and sent; ``reason`` is what the job
    record says (``error``; ``last_error`` after ``attempt N:``), or ``run paused:``
    and the run's ``reason``."""

    ending: Ending
    reason: str = ""
    countdown_s: float = 0.0


ENDED_DONE = StepEnd(Ending.DONE)


def run_step(rt: Runtime, send: Sender, step: JobStep, run_id: str, job_id: str) -> StepEnd:
    """Run ``step`` for one job, send what comes next, and refill a slot it freed."""
    freed = True  # unless the step says otherwise (or raised a bug), refill a slot
    try:
        with job_context(run_id, job_id):  # log lines below carry the ids (JSON logs)
            end = _run(rt, send, step, run_id, job_id)
        # A retried job keeps its slot; a failed or paused one gave it back.
        freed = end.ending is not Ending.RETRY and (
            end.ending is not Ending.DONE or step.frees_slot
        )
    finally:
        if freed:
            admit_and_send(rt.admission, send)  # now rather than at the next tick
    return end


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


def _run(rt: Runtime, send: Sender, step: JobStep, run_id: str, job_id: str) -> StepEnd:
    try:
        follow = step.run(rt, run_id, job_id)
    except TransientError as exc:
        return _retry_later(rt, send, step, run_id, job_id, exc)
    except JobFailed as exc:
        fail_job(rt, run_id, job_id, step.name, str(exc))
        return StepEnd(Ending.FAILED, str(exc))
    except RunFatal as exc:
        rt.store.pause_run(run_id, str(exc))
        log.error("run %s paused: %s", run_id, exc)
        return StepEnd(Ending.PAUSED, f"run paused: {exc}")
    if step.may_stay:
        rt.store.clear_failures(job_id, step.name)
    if follow.task:
        hold_leases(rt, job_id, follow.countdown_s)  # first: no gap for the tick to re-drive
        send(follow.task, [_message(run_id, job_id)], follow.countdown_s)
    if follow.failed:  # the step failed the job itself (a generation that failed)
        return StepEnd(Ending.FAILED, follow.failed)
    return ENDED_DONE


def _retry_later(
    rt: Runtime, send: Sender, step: JobStep, run_id: str, job_id: str, exc: TransientError
) -> StepEnd:
    """Send the step again after a backoff, or fail the job when out of retries."""
    attempts, first = rt.store.count_failure(job_id, step.name, rt.now())
    delay = next_delay(
        rt.policy,
        attempt=attempts,
        elapsed_s=rt.now() - first,
        retry_after_s=exc.retry_after_s,
        # bandit B311: retry jitter, not a secret.
        rand=random.random(),  # nosec B311
    )
    if delay is None:
        reason = f"gave up after {attempts} attempt(s): {exc}"
        fail_job(rt, run_id, job_id, step.name, reason)
        return StepEnd(Ending.FAILED, reason)
    last_error = str(exc)[:500]
    rt.store.update_job(job_id, last_error=last_error)
    log.info("job %s: %s failed (%s); retry %d in %.1fs", job_id, step.name, exc, attempts, delay)
    hold_leases(rt, job_id, delay)
    send(step.task, [_message(run_id, job_id)], delay)
    return StepEnd(Ending.RETRY, f"attempt {attempts}: {last_error}", delay)


def _message(run_id: str, job_id: str) -> contract.JobMessage:
    return {"run_id": run_id, "job_id": job_id}
