"""Run control: pause, resume, cancel and retry a run, each safe to repeat.

Plain functions taking their clients (job store, admission, provider, task sender) as
arguments; ``cli.control`` builds them from the settings. Every job moves
by compare-and-set (``JobStore.move`` with an explicit ``expect``), so a worker racing
an operator's command either wins (the command leaves that job alone) or loses (the
worker's own move is refused and it stops): no job is paid for twice or lost.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from provider.protocol import Canceller
from seedq.admission import Admission
from seedq.contract import JobState, RunStatus
from seedq.dispatch import Sender, admit_and_send
from seedq.errors import SeedqError
from seedq.notify import IN_FLIGHT_STATES
from seedq.store import JobStore, RunInfo

OPERATOR_PAUSE = "paused by an operator"
AT_PROVIDER = (JobState.SUBMITTING, JobState.SUBMITTED, JobState.RETRYING)
# Jobs whose call to the provider may have made a generation not recorded yet: an
# enqueue, or a stuck generation's retry (worker.unsticking).
UNANSWERED = frozenset({JobState.SUBMITTING, JobState.RETRYING})
READ_BATCH = 500
SETTLE_POLL_S = 0.2


class ControlError(SeedqError):
    """The run cannot take this command (unknown, or cancelled)."""


@dataclass(slots=True)
class CommandResult:
    """What a command did: counts by what happened, and the jobs an operator must see."""

    run_id: str
    counts: Counter[str] = field(default_factory=Counter)
    listed: list[str] = field(default_factory=list)
    provider_calls: int = 0
    # Jobs the command could not act on (left as they were): an operator has to look,
    # and the command line exits 1.
    left: Counter[str] = field(default_factory=Counter)

    def leave(self, why: str) -> None:
        """Count a job left as it was, under ``why`` (shown with the other counts)."""
        self.counts[why] += 1
        self.left[why] += 1


def require_run(store: JobStore, run_id: str) -> RunInfo:
    info = store.run(run_id)
    if info is None:
        raise ControlError(f"no run {run_id!r}")
    return info


def not_cancelled(info: RunInfo, command: str) -> None:
    if info.status == RunStatus.CANCELLED:
        raise ControlError(f"run {info.id} is cancelled; it cannot be {command}")


def run_priority(info: RunInfo) -> int:
    return int(info.meta.get("priority") or 0)


def wait(store: JobStore, run_id: str, job_id: str, job_priority: int, priority: int) -> None:
    """Put a registered job in its run's waiting queue, and the run in admission's set
    (``JobStore.requeue``)."""
    store.requeue(run_id, job_id, job_priority, priority)


def pause(store: JobStore, run_id: str, reason: str = OPERATOR_PAUSE) -> CommandResult:
    """No new submissions. Admitted jobs not yet sent give their slot back in the submit
    step; generations in flight finish and deliver."""
    info = require_run(store, run_id)
    not_cancelled(info, "paused")
    store.pause_run(run_id, reason)
    done = CommandResult(run_id)
    done.counts["in flight (will finish and deliver)"] = sum(
        info.counts.get(s, 0) for s in IN_FLIGHT_STATES
    )
    return done


def resume(
    store: JobStore,
    admission: Admission,
    send: Sender,
    run_id: str,
    *,
    budget: float | None = None,
) -> CommandResult:
    """Active again: every registered job waiting (none lost), then admit what fits.

    ``budget`` sets the run's cap first (raising it lets a run its budget paused go
    on; a cap below what is committed pauses it again at its next admission)."""
    info = require_run(store, run_id)
    not_cancelled(info, "resumed")
    done = CommandResult(run_id)
    if budget is not None:
        before = admission.budgets.state(run_id)
        admission.budgets.set_cap(run_id, budget)
        was = "none" if before.cap is None else f"{before.cap:.2f}"
        done.listed.append(
            f"budget cap {was} -> {budget:.2f} ({before.committed:.2f} committed so far)"
        )
    store.set_run_status(run_id, RunStatus.ACTIVE, reason="")
    priority = run_priority(info)
    registered = [
        (job_id, job)
        for job_id, job in store.run_jobs(run_id)
        if job.get("state") == JobState.REGISTERED and job.get("run_id") == run_id
    ]
    for start in range(0, len(registered), READ_BATCH):
        chunk = registered[start : start + READ_BATCH]
        records = dict(chunk)
        # A job admission moves meanwhile is seen waiting or in flight (the store reads
        # them in that order); a requeue (the other way) makes a harmless ZADD NX of a
        # queued job.
        for job_id in store.unqueued(run_id, [job_id for job_id, _job in chunk]):
            wait(store, run_id, job_id, job_priority(records[job_id]), priority)
            done.counts["re-queued"] += 1
    if admission.waiting(run_id):
        store.offer_run(run_id, priority)
    done.counts["waiting"] = admission.waiting(run_id)
    done.counts["sent now"] = admit_and_send(admission, send)
    return done


def job_priority(job: dict[str, str]) -> int:
    try:
        return int(json.loads(job.get("spec", "{}")).get("priority", 0))
    except (ValueError, TypeError):
        return 0


def cancel(
    store: JobStore,
    provider: Canceller,
    run_id: str,
    *,
    settle_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CommandResult:
    """Stop the run for good: nothing waiting starts, generations at the provider are
    cancelled there; generated jobs are paid for already and deliver.

    A job caught mid-enqueue (``submitting``) has no generation id yet: it is given up
    to ``settle_s`` to get one (its worker's call ends within the HTTP timeout), so its
    generation is cancelled at the provider rather than left running unowned."""
    require_run(store, run_id)
    store.set_run_status(run_id, RunStatus.CANCELLED, reason="cancelled by an operator")
    store.withdraw_run(run_id)
    done = CommandResult(run_id)
    enqueuing: list[str] = []
    for job_id, job in store.run_jobs(run_id):
        state = job.get("state", "")
        if state == JobState.REGISTERED:
            moved = store.move(
                job_id, run_id, JobState.CANCELLED, expect=[JobState.REGISTERED], **_why()
            )
            store.unqueue(run_id, job_id)
            if moved.ok:
                done.counts["cancelled before start"] += 1
            elif moved.before == JobState.SUBMITTING:
                enqueuing.append(job_id)  # its worker got past the run's status just now
        elif state in UNANSWERED:
            enqueuing.append(job_id)
        elif state == JobState.SUBMITTED:
            _cancel_at_provider(store, provider, run_id, job_id, done)
        elif state == JobState.GENERATED:
            done.counts["generated (paid; will deliver)"] += 1
    enqueuing = _settle(store, provider, run_id, enqueuing, done, clock() + settle_s, clock, sleep)
    for job_id in enqueuing:
        if _cancel_at_provider(store, provider, run_id, job_id, done):
            done.listed.append(
                f"{job_id}: its enqueue was still unanswered; a generation it created "
                "is not adopted (check the provider's queue)"
            )
    store.drop_waiting(run_id)
    return done


def _settle(
    store: JobStore,
    provider: Canceller,
    run_id: str,
    enqueuing: list[str],
    done: CommandResult,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> list[str]:
    """Wait for jobs mid-enqueue to get their generation, cancelling each as it does;
    returns those still enqueuing at the deadline."""
    while enqueuing:
        still = []
        for job_id in enqueuing:
            state = store.job_state(job_id)
            if state in UNANSWERED:
                still.append(job_id)
            elif state is JobState.SUBMITTED:
                _cancel_at_provider(store, provider, run_id, job_id, done)
            elif state is JobState.GENERATED:
                done.counts["generated (paid; will deliver)"] += 1
        enqueuing = still
        if not enqueuing or clock() >= deadline:
            break
        sleep(SETTLE_POLL_S)
    return enqueuing


def _cancel_at_provider(
    store: JobStore, provider: Canceller, run_id: str, job_id: str, done: CommandResult
) -> bool:
    # Moved first: a tracker that saw it generate meanwhile wins the CAS, and the job
    # delivers (paid already) instead of being cancelled after the fact.
    moved = store.move(job_id, run_id, JobState.CANCELLED, expect=AT_PROVIDER, **_why())
    if not moved.ok:
        if moved.before == JobState.GENERATED:
            done.counts["generated (paid; will deliver)"] += 1
        return False
    done.counts["cancelled at the provider"] += 1
    generation_id = store.job(job_id).get("generation_id")  # read after the move
    if generation_id:
        done.provider_calls += 1
        store.count_calls(job_id, 1)
        try:
            provider.cancel(generation_id)
        except SeedqError as exc:  # tolerated: it may have ended anyway
            done.leave("provider cancel errors")
            done.listed.append(f"{job_id}: cancel of {generation_id} failed: {exc}")
    return True


def _why() -> dict[str, str]:
    return {"error": "cancelled by an operator"}
