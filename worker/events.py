"""``seedq events``: listen to the provider's completion events and hand each finished
generation straight to delivery; one that failed or was cancelled goes to its track
task instead, so its failure is a task's. Events are a shortcut, not the truth:
anything missed while disconnected is still found by the polling track tasks."""

from __future__ import annotations

import logging
import threading

from provider.models import CompletionEvent
from seedq import contract
from seedq.dispatch import Sender
from worker.job import Job
from worker.runtime import Runtime
from worker.tracking import hand_success

log = logging.getLogger(__name__)


def handle_event(rt: Runtime, send: Sender, event: CompletionEvent) -> str | None:
    """Apply one completion; returns the job id it concerned, or None if not ours."""
    job_id = rt.store.job_for_generation(event.generation_id)
    if job_id is None:
        return None
    job = Job.parse(job_id, rt.store.job(job_id))
    if job is None or job.state is not contract.JobState.SUBMITTED:
        return job_id  # polling got there first
    if job.generation_id != event.generation_id:
        return job_id  # a generation the job left: killed and retried for being stuck
    if str(event.status) != "succeeded":
        # Failed or cancelled: ended by its track task (one status call), so that a job
        # that fails does so in a task, which Flower shows as FAILURE with the reason.
        send(contract.TASK_TRACK, [{"run_id": job.run_id, "job_id": job_id}])
        return job_id
    hand_success(rt, send, job, event.url)
    return job_id


def listen(rt: Runtime, send: Sender, stop: threading.Event) -> int:
    """Run until ``stop`` is set; returns how many events concerned seedq's jobs."""
    handled = 0
    for event in rt.provider.events(stop=stop):
        try:
            if handle_event(rt, send, event):
                handled += 1
        except Exception:  # one bad event must not end the listener; polling covers it
            log.exception("completion event for %s not handled", event.generation_id)
    return handled
