"""Retrying a run's failed jobs, never paying twice for a clip: a failed delivery is
delivered again from its paid generation; a job whose generation provably made nothing
gets a fresh attempt; where the outcome is unknown the provider is asked first (the
generation's status, or the list, as the submit step reconciles). Delivered jobs are
never touched; jobs that need an operator are listed and skipped unless asked.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from provider.protocol import Reader
from seedq import contract
from seedq.admission import Admission
from seedq.contract import ADMITTING, JobState
from seedq.dispatch import Sender, admit_and_send
from seedq.errors import SeedqError
from seedq.store import JobStore
from worker.control import (
    CommandResult,
    job_priority,
    not_cancelled,
    require_run,
    run_priority,
    wait,
)

# What a stuck generation's kill-and-retry left on a job (worker.unsticking): a fresh
# attempt starts without them, so it has its own one stuck retry and its own bill.
STUCK_FIELDS = (
    "stuck_generation_id",
    "stuck_retries",
    "stuck_failed",
    "stuck_est_cost",
    "stuck_cancel_of",
    "stuck_cancelled",
    "retry_of",
    "retry_started_at",
    "retry_settled",
    "retry_refused_of",
    "retry_reconciled",
    "retried_at",
)
# Generation statuses that prove a generation produced nothing (a fresh attempt is safe).
NOTHING_MADE = frozenset({"failed", "cancelled"})


def retry(
    store: JobStore,
    admission: Admission,
    provider: Reader,
    send: Sender,
    run_id: str,
    *,
    include_ambiguous: bool = False,
) -> CommandResult:
    """Re-drive the run's failed jobs (never a delivered one), never paying twice:
    failed at delivery → generated again, with a deliver task; nothing was made → a
    fresh attempt; the provider decides for a generation whose end is unknown."""
    info = require_run(store, run_id)
    not_cancelled(info, "retried")
    done = CommandResult(run_id)
    deliver: list[contract.JobMessage] = []
    for job_id, job in store.run_jobs(run_id):
        if job.get("state") != JobState.FAILED or job.get("run_id") != run_id:
            continue
        route = _route(store, job_id, job, provider, done)
        if route == "ambiguous" and not include_ambiguous:
            done.leave("needs an operator (skipped)")
            done.listed.append(f"{job_id}: {job.get('error', '')}")
            continue
        if route == "skip":
            continue
        store.clear_failures(job_id)  # every step's: the job starts over
        if route == "deliver":
            if _generated_again(store, run_id, job_id, job):
                deliver.append({"run_id": run_id, "job_id": job_id})
                done.counts["delivery again"] += 1
            continue
        fields = _fresh_attempt_fields(job)
        moved = store.move(job_id, run_id, JobState.REGISTERED, expect=[JobState.FAILED], **fields)
        if moved.ok:
            store.clear_job_fields(job_id, "needs_operator", "send_settled", *STUCK_FIELDS)
            wait(store, run_id, job_id, job_priority(job), run_priority(info))
            done.counts["fresh attempt"] += 1
    if deliver:
        send(contract.TASK_DELIVER, deliver)
    done.counts["sent now"] = admit_and_send(admission, send)
    if info.status not in ADMITTING:
        done.listed.append(f"run is {info.status}: fresh attempts wait for `seedq resume`")
    return done


def _generated_again(store: JobStore, run_id: str, job_id: str, job: dict[str, str]) -> bool:
    """Move a job that failed at delivery back to ``generated`` with its paid generation
    (False: it moved meanwhile)."""
    return store.move(
        job_id,
        run_id,
        JobState.GENERATED,
        expect=[JobState.FAILED],
        error="",
        failed_step="",
        result_url=job.get("result_url", ""),
        generation_id=job.get("generation_id", ""),
    ).ok


def _fresh_attempt_fields(job: dict[str, str]) -> dict[str, str | float]:
    """What a fresh attempt clears (and re-estimates) on a failed job's record."""
    fields: dict[str, str | float] = {
        "error": "",
        "failed_step": "",
        "generation_id": "",
        "result_url": "",
    }
    if job.get("stuck_est_cost"):
        # Its stuck retry's extra generation belonged to the attempt that failed.
        est = float(job.get("est_cost") or 0) - float(job["stuck_est_cost"])
        fields["est_cost"] = max(0.0, est)
    return fields


def retry_for_resume(
    store: JobStore, admission: Admission, provider: Reader, send: Sender, run_id: str
) -> tuple[CommandResult, set[str]]:
    """A resumed run's failed jobs, re-driven as :func:`retry` does before the manifest
    registers its jobs again: registering a failed job starts it afresh, which would
    generate (and pay for) a clip its paid generation can still deliver. Returns the
    outcome and the jobs still failed (they need an operator, or the provider could not
    say): those must not be registered again."""
    done = retry(store, admission, provider, send, run_id)
    still = {
        job_id
        for job_id, job in store.run_jobs(run_id)
        if job.get("state") == JobState.FAILED and job.get("run_id") == run_id
    }
    return done, still


def _route(
    store: JobStore, job_id: str, job: dict[str, str], provider: Reader, done: CommandResult
) -> str:
    """deliver | fresh | ambiguous | skip, for one failed job."""
    generation_id = job.get("generation_id", "")
    step = job.get("failed_step", "")
    if job.get("needs_operator") == "1" or job.get("retry_of"):
        # retry_of: it failed while a stuck generation's retry was unanswered, so a
        # generation of it may be running unowned (worker.unsticking).
        return "ambiguous"
    if generation_id and step == "deliver" and job.get("result_url"):
        return "deliver"
    if not generation_id and step == "submit" and job.get("sent_params"):
        # It failed with its enqueue maybe unanswered: the provider's list decides.
        return _reconcile(store, job_id, job, provider, done)
    if not generation_id or step == "generate":
        return "fresh"  # never created, or its generation failed: nothing was paid for
    return _ask_provider(job_id, job, generation_id, provider, done)


def _ask_provider(
    job_id: str, job: dict[str, str], generation_id: str, provider: Reader, done: CommandResult
) -> str:
    # Failed while tracking: only the provider knows whether it made a video.
    done.provider_calls += 1
    try:
        gen = provider.get(generation_id)
    except SeedqError as exc:  # unknown: the job stays as it is
        done.leave("provider unreachable (skipped)")
        done.listed.append(f"{job_id}: status of {generation_id} unknown: {exc}")
        return "skip"
    status = str(getattr(gen, "status", ""))
    if status == "succeeded" and getattr(gen, "result_url", None):
        job["result_url"], job["generation_id"] = str(gen.result_url), generation_id
        return "deliver"
    if status in NOTHING_MADE:
        return "fresh"
    done.counts["still running at the provider (skipped)"] += 1
    return "skip"


def _reconcile(
    store: JobStore, job_id: str, job: dict[str, str], provider: Reader, done: CommandResult
) -> str:
    """Whether a failed enqueue created a generation, from the provider's lists as the
    submit step reconciles (worker.submitting, worker.reconcile): the active rows, then
    the model's history back to the send, never the account's whole history; before
    anything is sent again."""
    from worker.history import history_since, window_start
    from worker.reconcile import Verdict, reconcile

    spec = json.loads(job.get("spec") or "{}")
    model = str(spec.get("model"))
    # Written with sent_params; the registration time bounds the walk if it were not.
    since = window_start(float(job.get("submit_started_at") or job.get("created_at") or 0.0))
    found: dict[str, Any] = {}
    try:
        done.provider_calls += 1
        for gen in provider.list(model=model).generations:
            found[gen.generation_id] = gen
        for gen in history_since(_Counted(provider, done), model=model, status=None, since=since):
            found[gen.generation_id] = gen
    except SeedqError as exc:  # unknown: the job stays as it is
        done.leave("provider unreachable (skipped)")
        done.listed.append(f"{job_id}: the provider's list is unavailable: {exc}")
        return "skip"
    decided = reconcile(
        found.values(),
        model=str(spec.get("model")),
        sent=json.loads(job["sent_params"]),
        started_at=float(job.get("submit_started_at") or 0.0),
        now=time.time(),
        grace_s=0.0,
        taken={g for g in found if store.job_for_generation(g) not in (None, job_id)},
    )
    if decided.verdict is Verdict.AMBIGUOUS:
        return "ambiguous"
    if decided.verdict is not Verdict.FOUND:
        return "fresh"  # provably never created
    generation_id = decided.matches[0].generation_id
    if not store.claim_generation(generation_id, job_id):
        return "ambiguous"  # another job took it meanwhile
    return _ask_provider(job_id, job, generation_id, provider, done)


@dataclass(slots=True)
class _Counted:
    """The provider's history pages, each call counted in the outcome."""

    provider: Reader
    done: CommandResult

    def history(self, **query: Any) -> Any:
        self.done.provider_calls += 1
        return self.provider.history(**query)
