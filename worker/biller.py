"""The tick's billing pass: ask the provider what delivered jobs were billed, record it.

Run by the ticker (``worker.ticker``) once a second on the worker holding the tick lock,
so learning bills costs no task and no in-flight slot per job, however many jobs finish
together: the due jobs (``keys.UNBILLED``) are read in one batch and served by at most
:data:`MAX_CALLS_PER_PASS` provider calls, each a turn of the poll budget taken without
waiting (a turn not free now is left to the next tick; tracking is never held up).
How to ask, and what the answers mean, is decided in ``worker.bills``.

A bill is written into the delivered clip's sidecar first, then recorded in Redis
(``seedq.billing``): a crash in between leaves the job due, and the next pass writes the
same sidecar again and records it once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from provider.errors import MalformedResponse, PermanentJobError, ProviderError
from provider.models import BilledGeneration
from seedq.billing import BILLED, UNKNOWN, Billing
from seedq.contract import JobState
from seedq.errors import TransientError
from worker.bills import (
    MAX_PAGES_PER_MODEL,
    DueJob,
    job_bill,
    next_look_s,
    page_size_for,
    plan,
    row_charge,
    window_start,
)
from worker.delivery import sidecar_key
from worker.history import reached_older
from worker.runtime import Runtime
from worker.throttled_calls import reported

log = logging.getLogger(__name__)

DUE_BATCH = 1000  # due jobs read per pass; the rest wait for the next tick
MAX_CALLS_PER_PASS = 3  # provider calls per tick: the tick must stay short
# No call starts this long after the pass began: the tick lock lasts 5 s (worker.ticker)
# and the sweep came first; a slow provider leaves the rest to the next tick.
MAX_PASS_S = 2.0
BILLABLE = frozenset({JobState.DELIVERED.value, JobState.FAILED.value})
_FIELDS = (
    "run_id",
    "state",
    "spec",
    "generation_id",
    "stuck_generation_id",
    "submit_started_at",
    "billing_looks",
    "billing_by_id",
    "billed_parts",
)


@dataclass
class BillPass:
    """What one pass did (for tests and logs)."""

    calls: int = 0
    billed: list[str] = field(default_factory=list)
    looked: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    stopped: str = ""  # why the pass ended before asking for every due job


# Answers that say nothing of a cost: a look is counted, so they end in "unknown" after
# the bounded looks instead of being asked for again every tick.
_ANSWERS = (PermanentJobError, MalformedResponse)


class _OutOfTurns(Exception):
    """No provider call may go now (budget, breaker, this pass's share, an outage)."""


@dataclass
class _Calls:
    """Provider calls of one pass, each a turn of the poll budget taken without waiting."""

    rt: Runtime
    done: BillPass
    left: int = MAX_CALLS_PER_PASS
    until: float = field(default_factory=lambda: time.monotonic() + MAX_PASS_S)

    def make(self, endpoint: str, call: Any) -> Any:
        if self.done.stopped:
            raise _OutOfTurns(self.done.stopped)
        if self.left <= 0:
            self.done.stopped = "calls"
        elif time.monotonic() > self.until:
            self.done.stopped = "time"
        elif self.rt.poll_throttle.acquire_or_wait_s() > 0:
            self.done.stopped = "budget"
        if self.done.stopped:
            raise _OutOfTurns(self.done.stopped)
        self.left -= 1
        self.done.calls += 1
        try:
            return reported(self.rt.poll_throttle, call, endpoint)
        except _ANSWERS:
            raise  # an answer (404: no such row; a row unreadable): the caller counts a look
        except ProviderError as exc:
            self.done.stopped = f"provider: {exc}"
            raise _OutOfTurns(self.done.stopped) from exc


def bill_due(rt: Runtime, *, now: float | None = None) -> BillPass:
    """One billing pass over the jobs whose bill is due (see the module docstring)."""
    done = BillPass()
    billing = rt.store.billing
    at = rt.now() if now is None else now
    due = _due_jobs(rt, billing, billing.due(at, DUE_BATCH))
    if not due:
        return done
    calls = _Calls(rt, done)
    charges: dict[str, list[float | None]] = {}
    chosen = plan(due.values())
    missed: set[str] = set()
    for model, jobs in chosen.paged.items():
        found, exhausted = _from_pages(calls, model, jobs)
        for job in jobs:
            row = found.get(job.generation_id)
            if row is not None:
                charges[job.job_id] = [row_charge(str(row.status), row.cost)]
            elif exhausted:
                missed.add(job.job_id)
    for job in chosen.by_id:
        answer = _ask_by_id(rt, calls, job)
        if answer is not None:
            charges[job.job_id] = answer
    for job_id, job_charges in charges.items():
        _settle(rt, billing, due[job_id], job_bill(job_charges), at, done)
    for job_id in missed:  # not in the pages' window: ask by id next time
        rt.store.update_job(job_id, billing_by_id=1)
        _look_later(billing, due[job_id], at, done)
    if done.stopped:
        log.debug("billing pass stopped early: %s", done.stopped)
    return done


def _due_jobs(rt: Runtime, billing: Billing, job_ids: list[str]) -> dict[str, DueJob]:
    if not job_ids:
        return {}
    rows = rt.store.job_fields(job_ids, _FIELDS)
    due: dict[str, DueJob] = {}
    for job_id, values in zip(job_ids, rows, strict=True):
        raw = dict(zip(_FIELDS, values, strict=True))
        if raw["state"] not in BILLABLE or not raw["generation_id"]:
            billing.forget(job_id)  # registered again since: not this entry's to bill
            continue
        try:
            model = str(json.loads(raw["spec"])["model"])
        except (ValueError, KeyError, TypeError):
            billing.forget(job_id)
            continue
        gens = (raw["generation_id"], raw["stuck_generation_id"])
        due[job_id] = DueJob(
            job_id=job_id,
            run_id=raw["run_id"],
            model=model,
            generation_ids=tuple(g for g in gens if g),
            sent_at=float(raw["submit_started_at"]) if raw["submit_started_at"] else None,
            looks=int(raw["billing_looks"] or 0),
            by_id=bool(raw["billing_by_id"]),
            known=_parts(raw["billed_parts"]),
        )
    return due


def _from_pages(
    calls: _Calls, model: str, jobs: list[DueJob]
) -> tuple[dict[str, BilledGeneration], bool]:
    """The rows of these jobs found in history pages; True when the pages were read as
    far as they may be (a job not found is then asked for by id), False when the pass
    ran out of turns first (the rest wait for the next pass)."""
    wanted = {job.generation_id for job in jobs}
    start = window_start(jobs)
    size = page_size_for(len(jobs))
    found: dict[str, BilledGeneration] = {}

    def read(number: int) -> Any:
        return calls.rt.provider.history(
            page=number, page_size=size, model=model, status="succeeded"
        )

    for number in range(1, MAX_PAGES_PER_MODEL + 1):
        try:
            page = calls.make("history", lambda: read(number))  # noqa: B023 (called at once)
        except _ANSWERS:
            return found, True  # the history is not served (or unreadable): ask each by id
        except _OutOfTurns:
            return found, False
        for row in page.generations:
            if row.generation_id in wanted:
                found[row.generation_id] = row
        if len(found) == len(wanted) or page.is_last:
            break
        if start is not None and reached_older(page.generations, since=start):
            break
    return found, True


def _parts(text: str) -> dict[str, float]:
    try:
        data = json.loads(text or "{}")
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def _ask_by_id(rt: Runtime, calls: _Calls, job: DueJob) -> list[float | None] | None:
    """The job's charges, one per generation ([None]: one is not charged yet); None when
    the pass ran out of turns first (what was learned is kept for the next pass)."""
    parts = dict(job.known)
    try:
        for gid in job.generation_ids:
            if gid in parts:
                continue
            charge = _by_id(calls, gid)
            if charge is None:
                return [None]
            parts[gid] = charge
        return [parts[gid] for gid in job.generation_ids]
    except _OutOfTurns:
        return None
    finally:
        if len(job.generation_ids) > 1 and parts != job.known:
            rt.store.update_job(job.job_id, billed_parts=json.dumps(parts, sort_keys=True))


def _by_id(calls: _Calls, generation_id: str) -> float | None:
    try:
        row: BilledGeneration = calls.make(
            "billed", lambda: calls.rt.provider.billed(generation_id)
        )
    except _ANSWERS:
        return None  # no such row (yet), or unreadable: a look without a cost
    return row_charge(str(row.status), row.cost)


def _settle(
    rt: Runtime, billing: Billing, job: DueJob, amount: float | None, now: float, done: BillPass
) -> None:
    if amount is None:
        _look_later(billing, job, now, done)
        if job.job_id in done.unknown:
            try:
                _rewrite_sidecar(rt, job, None, UNKNOWN)
            except TransientError as exc:  # the record says it; the sidecar stays pending
                log.warning("job %s: sidecar not rewritten: %s", job.job_id, exc)
        return
    try:
        _rewrite_sidecar(rt, job, amount, BILLED)
    except TransientError as exc:  # the output store is down: the bill waits for it
        log.warning("job %s: bill known but the sidecar cannot be rewritten: %s", job.job_id, exc)
        billing.look_later(job.job_id, now + (next_look_s(1) or 0.0), counted=False)
        return
    if billing.record(job.job_id, job.run_id, amount, now):
        done.billed.append(job.job_id)
        log.info("job %s billed %.6f", job.job_id, amount)


def _look_later(billing: Billing, job: DueJob, now: float, done: BillPass) -> None:
    delay = next_look_s(job.looks + 1)
    if delay is None:
        billing.give_up(job.job_id, job.run_id)
        done.unknown.append(job.job_id)
        log.warning("job %s: the provider never showed its cost; billed unknown", job.job_id)
        return
    billing.look_later(job.job_id, now + delay)
    done.looked.append(job.job_id)


def _rewrite_sidecar(rt: Runtime, job: DueJob, amount: float | None, status: str) -> None:
    """Put the bill into the delivered clip's sidecar (a failed job has none)."""
    raw = rt.store.job(job.job_id)
    if raw.get("state") != JobState.DELIVERED:
        return
    try:
        key = sidecar_key(str(json.loads(raw["spec"])["output_key"]))
    except (ValueError, KeyError, TypeError):
        return
    side = rt.storage.get_json(key)
    if side is None:
        return  # nothing stored to rewrite (removed by hand: the audit reports it)
    cost = side.get("cost")
    side["cost"] = {**(cost if isinstance(cost, dict) else {}), "billed": amount}
    side["cost"]["billed_status"] = status
    rt.storage.put_json(key, side)
