"""The track step: one status check of a generation that the sweep (worker.ticker)
saw leave the provider's active list, or stay in it stuck (worker.unsticking), and the
completion handling shared with the events listener. No task ever waits on a
generation."""

from __future__ import annotations

import logging

from provider.classify import classify_generation_failure
from provider.errors import InsufficientCredits
from seedq.contract import TASK_DELIVER, TASK_TRACK, JobState
from seedq.dispatch import Sender, admit_and_send
from seedq.records import Moved
from worker.errors import RunPaused
from worker.job import DONE, Job, Next
from worker.runtime import Runtime
from worker.submitting import load
from worker.throttled_calls import reported, wait_turn
from worker.unsticking import cancelled_for_stuck, fail_stuck, handle_stuck, resolve_retry

log = logging.getLogger(__name__)

RUNNING = frozenset({"queued", "processing"})


def track_job(rt: Runtime, run_id: str, job_id: str) -> Next:
    job = load(rt, run_id, job_id)
    if job is not None and _retry_to_resolve(job):
        return resolve_retry(rt, job)  # a stuck generation's retry may have been sent
    if job is None or job.state is not JobState.SUBMITTED or job.generation_id is None:
        return DONE  # delivered by the events listener already, or not ours any more
    wait = wait_turn(rt.poll_throttle)
    if wait > 0:
        return Next(TASK_TRACK, wait)
    rt.store.count_calls(job_id, 1)
    generation_id = job.generation_id
    gen = reported(rt.poll_throttle, lambda: rt.provider.get(generation_id))
    if gen.status in RUNNING and job.raw.get("stuck_cancelled") != generation_id:
        stuck = handle_stuck(rt, job, gen)  # the sweep sends running ones here when stuck
        if stuck is not None:
            return stuck
    return complete(rt, job, gen.status, result_url=gen.result_url, error=gen.error_message)


def _retry_to_resolve(job: Job) -> bool:
    """Whether a stuck generation's retry may have been sent for ``job``, unanswered."""
    return job.state is JobState.RETRYING or (
        job.state is JobState.CANCELLED and bool(job.raw.get("retry_of"))
    )


def poll_success(rt: Runtime, send: Sender, run_id: str, job_id: str) -> bool:
    """The sweep's own status call, for a generation it saw leave the active list: True
    when there was nothing to do or it succeeded and was handed on here
    (:func:`hand_success`); False when its track task must see to it: a failure or a
    cancel (so that a job fails in a task, which Flower shows as FAILURE with the
    reason; one more status call, for failures only), a generation still running, a
    retry to resolve, or no turn of the poll budget now."""
    job = load(rt, run_id, job_id)
    if job is not None and _retry_to_resolve(job):
        return False
    if job is None or job.state is not JobState.SUBMITTED or job.generation_id is None:
        return True  # delivered by the events listener already, or not ours any more
    if wait_turn(rt.poll_throttle) > 0:
        return False
    rt.store.count_calls(job_id, 1)
    generation_id = job.generation_id
    gen = reported(rt.poll_throttle, lambda: rt.provider.get(generation_id))
    if gen.status != "succeeded" or not gen.result_url:
        return False
    hand_success(rt, send, job, gen.result_url)
    return True


def hand_success(rt: Runtime, send: Sender, job: Job, result_url: str | None) -> None:
    """A generation that succeeded, seen outside a track task (a completion event, the
    sweep's status call): the job moves to generated, its delivery is sent, and the
    slot it freed goes to a waiting job at once."""
    follow = complete(rt, job, "succeeded", result_url=result_url, error=None)
    if follow.task == TASK_DELIVER:
        send(TASK_DELIVER, [{"run_id": job.run_id, "job_id": job.id}])
    admit_and_send(rt.admission, send)


def complete(
    rt: Runtime, job: Job, status: str, *, result_url: str | None, error: str | None
) -> Next:
    """Apply a generation's status to its job; safe to call twice (polling and events).

    Only while the job still follows that generation: one killed and retried for being
    stuck ends ``cancelled``, which must not cancel the job that left it."""
    if status == "cancelled":
        # Read again, after the provider said so: seedq's give-up records its intent
        # before its DELETE, and a job read before that (by a second track task polling
        # the same generation meanwhile) would take seedq's own cancel for the
        # provider's and end cancelled instead of failed for being stuck.
        fresh = Job.parse(job.id, rt.store.job(job.id))
        if fresh is None or fresh.generation_id != job.generation_id:
            return DONE  # it left that generation meanwhile: killed and retried
        job = fresh
    if cancelled_for_stuck(job, status):
        return fail_stuck(rt, job)  # cancelled by seedq itself for being stuck
    if status == "succeeded" and result_url:
        moved = _settle(rt, job, JobState.GENERATED, result_url=result_url, generated_at=rt.now())
        return Next(TASK_DELIVER) if moved.ok else DONE
    if status == "failed":
        reason = classify_generation_failure(error or "failed without a reason")
        failed = f"generation failed: {reason.message}"
        moved = _settle(rt, job, JobState.FAILED, error=failed, failed_step="generate")
        if isinstance(reason, InsufficientCredits):
            raise RunPaused(f"provider: {reason.message}")
        return Next(failed=failed) if moved.ok else DONE
    if status == "cancelled":
        _settle(rt, job, JobState.CANCELLED, error="cancelled at the provider")
        return DONE
    if status not in RUNNING and status != "succeeded":
        log.warning("job %s: unknown generation status %r; the sweep checks again", job.id, status)
    # Still running (the list lagged, or no result URL yet): the sweep watches it.
    rt.leases.renew([job.id])
    return DONE


def _settle(rt: Runtime, job: Job, to: JobState, **fields: str | int | float) -> Moved:
    """Move a submitted job to where its generation ended, only while it still follows
    that generation (a stuck one's retry may have replaced it meanwhile)."""
    following = {"generation_id": job.generation_id or ""}
    return rt.store.move_when(
        job.id, job.run_id, to, expect=[JobState.SUBMITTED], when=following, **fields
    )
