"""The audit's edges: read a run's facts from the job store, the provider and the output
store, and repair what can be repaired through the normal delivery step.

Reading costs, per model of the run, the pages of its succeeded generations enqueued
since the run began (``GET /api/ai/generations``, 1000 rows a page, newest first,
stopping at the first older row: never the account's whole history), a
``GET /api/ai/generations/{id}`` for each generation a job owns that those pages do not
hold (a killed stuck one, a failed one) when its job recorded a bill, one Redis round
trip per batch of jobs, and a HEAD (plus a sidecar GET) per delivered job; ``--verify``
also downloads each stored video and decodes it with PyAV. Every provider call takes a
turn of the cluster's status-call budget (:class:`Budgeted`), as a worker's would.

Repairs never enqueue anything at the provider. Each moves the job by compare-and-set
into ``generated`` with the paid generation and runs ``worker.delivery.deliver_job``,
exactly as a deliver task would, so a worker racing the repair either wins (the repair
finds the job moved and stops) or loses; repeating a repair finds nothing left to do.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from provider.errors import NotFound
from provider.models import BilledGeneration, Generation, GenerationPage
from provider.protocol import Pages
from seedq.contract import JobState
from seedq.errors import SeedqError, TransientError
from seedq.store import JobStore
from storage.base import Storage
from worker.audit_facts import IN_FLIGHT, JobFacts, OutputFacts, job_facts
from worker.audit_rules import audit
from worker.control import require_run
from worker.delivery import deliver_job, sidecar_key
from worker.errors import InvalidVideo
from worker.findings import Finding, Repair
from worker.history import PAGE_SIZE, history_since, window_start
from worker.ownership import ADOPTABLE
from worker.runtime import Runtime
from worker.submitting import load
from worker.throttled_calls import reported, wait_turn
from worker.verify import verify_video

OWNER_BATCH = 500
T = TypeVar("T")


class History(Pages, Protocol):
    """What reading needs of the provider (``OxenClient``): history pages, billed rows."""

    def billed(self, generation_id: str) -> BilledGeneration: ...


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the audit of one run looked at."""

    run_id: str
    jobs: list[JobFacts]
    succeeded: list[Generation]
    owners: dict[str, str]
    outputs: dict[str, OutputFacts]
    costs: dict[str, float | None]  # what the provider charged for each generation owned


@dataclass(frozen=True, slots=True)
class Repaired:
    """The outcome of one repair; ``detail`` is for the operator (never a URL)."""

    finding: Finding
    ok: bool
    detail: str


def gather(
    store: JobStore,
    provider: History,
    storage: Storage,
    run_id: str,
    *,
    verify: bool = False,
    tolerance_s: float = 1.0,
) -> Facts:
    """Read the run's facts; ControlError for an unknown run."""
    info = require_run(store, run_id)
    # A job id registered again by a later run belongs to that run's audit now.
    found = [
        job_facts(jid, raw) for jid, raw in store.run_jobs(run_id) if raw.get("run_id") == run_id
    ]
    # Nothing of this run was enqueued before it was created (nor a job registered).
    since = window_start(min([info.created_at] + [job.created_at for job in found]))
    succeeded: dict[str, BilledGeneration] = {}
    for model in sorted({job.model for job in found if job.model}):
        for gen in history_since(provider, model=model, status="succeeded", since=since):
            succeeded[gen.generation_id] = gen
    owned = {gid for job in found for gid in job.owned}
    # Only jobs that recorded a bill are compared (worker.audit_rules.billed_findings): a row
    # the pages lack is asked for by id for those alone (a killed stuck generation, a
    # failed one), never for every job still in flight.
    billed = {gid for job in found if job.billed_cost is not None for gid in job.owned}
    costs = {gid: gen.cost for gid, gen in succeeded.items() if gid in billed}
    costs |= {gid: _billed(provider, gid) for gid in sorted(billed - set(succeeded))}
    ids = set(succeeded) | owned
    outputs = {
        job.id: _output(storage, job, verify=verify, tolerance_s=tolerance_s)
        for job in found
        if job.state == JobState.DELIVERED
    }
    return Facts(run_id, found, list(succeeded.values()), owners(store, ids), outputs, costs)


def _billed(provider: History, generation_id: str) -> float | None:
    """What the provider charged for one generation; None when it is not charged yet
    or the provider no longer knows it."""
    try:
        return provider.billed(generation_id).cost
    except NotFound:
        return None


def findings(facts: Facts, *, now: float | None = None) -> list[Finding]:
    return audit(
        facts.jobs,
        facts.succeeded,
        facts.owners,
        facts.outputs,
        now=time.time() if now is None else now,
        costs=facts.costs,
    )


def owners(store: JobStore, generation_ids: Iterable[str]) -> dict[str, str]:
    """Generation id → the job its ``seedq:gen`` key names, for those that have one."""
    ids = sorted(generation_ids)
    found: dict[str, str] = {}
    for start in range(0, len(ids), OWNER_BATCH):
        found.update(store.generation_owners(ids[start : start + OWNER_BATCH]))
    return found


def _output(storage: Storage, job: JobFacts, *, verify: bool, tolerance_s: float) -> OutputFacts:
    video = storage.stat(job.output_key)
    sidecar = storage.get_json(sidecar_key(job.output_key))
    invalid = None
    if video is not None and verify:
        invalid = _check_video(storage, job, tolerance_s)
    return OutputFacts(video, sidecar, invalid, storage.uri(job.output_key))


def _check_video(storage: Storage, job: JobFacts, tolerance_s: float) -> str | None:
    """Why the stored video is not the one asked for; None when it is (or vanished)."""
    with tempfile.TemporaryDirectory(prefix="seedq-audit-") as folder:
        path = Path(folder) / "video.mp4"
        if not storage.get_file(job.output_key, path):
            return None  # removed since the stat: the next audit sees it missing
        try:
            verify_video(path, job.sent_params or {}, tolerance_s=tolerance_s)
        except InvalidVideo as exc:
            return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class Audited:
    """An audit, and its repairs when asked: ``remaining`` is what a fresh audit found
    after the repairs (the findings themselves when nothing was repaired)."""

    found: list[Finding]
    repaired: list[Repaired]
    remaining: list[Finding]

    def rows(self, *, with_repairs: bool) -> list[dict[str, str | bool | float]]:
        """One plain row per finding, with its repair's outcome when repairs ran."""
        done = {
            (r.finding.kind, r.finding.job_id, r.finding.generation_id): r for r in self.repaired
        }
        rows: list[dict[str, str | bool | float]] = []
        for finding in self.found:
            row: dict[str, str | bool | float] = dict(finding.as_dict())
            if with_repairs:
                result = done.get((finding.kind, finding.job_id, finding.generation_id))
                row["repaired"] = result.ok if result else False
                row["detail"] = result.detail if result else "no repair for this finding"
            rows.append(row)
        return rows


def audit_run(rt: Runtime, run_id: str, *, fix: bool = False, verify: bool = False) -> Audited:
    """Audit one run with the runtime's clients; with ``fix``, repair and audit again."""

    def look() -> list[Finding]:
        facts = gather(
            rt.store,
            Budgeted(rt),
            rt.storage,
            run_id,
            verify=verify,
            tolerance_s=rt.settings.verify_tolerance_s,
        )
        return findings(facts, now=rt.now())

    found = look()
    repaired = repair(rt, run_id, found) if fix else []
    return Audited(found, repaired, look() if repaired else found)


# -- repairs --------------------------------------------------------------------------------


def repair(rt: Runtime, run_id: str, found: Iterable[Finding]) -> list[Repaired]:
    """Carry out every finding's repair, one per job; findings without one are left."""
    done: dict[str, tuple[bool, str]] = {}
    results = []
    for finding in found:
        if finding.repair is Repair.NONE:
            continue
        if finding.job_id not in done:
            try:
                if finding.repair is Repair.DELIVER:
                    done[finding.job_id] = _deliver_paid(rt, run_id, finding)
                else:
                    done[finding.job_id] = _redeliver(rt, run_id, finding)
            except SeedqError as exc:  # the provider or the store said no: report it
                done[finding.job_id] = (False, str(exc))
        ok, detail = done[finding.job_id]
        results.append(Repaired(finding, ok, detail))
    return results


def _turn(rt: Runtime, call: Callable[[], T], endpoint: str) -> T:
    """One provider call on a turn of the cluster's status-call budget, reported to its
    breaker, as a worker's would be: an audit or a repair of a large run beside a
    running cluster must not push the provider into 429s."""
    while (wait := wait_turn(rt.poll_throttle)) > 0:
        time.sleep(wait)
    return reported(rt.poll_throttle, call, endpoint)


@dataclass(frozen=True, slots=True)
class Budgeted:
    """The runtime's provider as the audit reads it, each call on a turn of the budget."""

    rt: Runtime

    def history(
        self,
        *,
        page: int = 1,
        page_size: int = PAGE_SIZE,
        model: str | None = None,
        status: str | None = None,
    ) -> GenerationPage:
        provider = self.rt.provider
        return _turn(
            self.rt,
            lambda: provider.history(page=page, page_size=page_size, model=model, status=status),
            "history",
        )

    def billed(self, generation_id: str) -> BilledGeneration:
        return _turn(self.rt, lambda: self.rt.provider.billed(generation_id), "billed")


def _fresh_url(rt: Runtime, job_id: str, generation_id: str) -> str | None:
    """A new presigned result URL from a GET of the generation; None when it has none."""
    rt.store.count_calls(job_id, 1)
    gen = _turn(rt, lambda: rt.provider.get(generation_id), "status")
    return gen.result_url if gen.status == "succeeded" and gen.result_url else None


def _deliver_paid(rt: Runtime, run_id: str, finding: Finding) -> tuple[bool, str]:
    """Adopt a paid generation into its job (claiming it first) and deliver it."""
    job_id, gid = finding.job_id, finding.generation_id
    job = load(rt, run_id, job_id)
    if job is None:
        return False, f"job is no longer in run {run_id}"
    if job.state is JobState.DELIVERED:
        return True, "delivered already"
    own = job.generation_id == gid
    if job.state not in ADOPTABLE and not (job.state in IN_FLIGHT and own):
        return False, f"job is {job.state} with another generation; an operator must decide"
    if not rt.store.claim_generation(gid, job_id):
        return False, f"generation is owned by job {rt.store.job_for_generation(gid)}"
    url = _fresh_url(rt, job_id, gid)
    if url is None:
        return False, "the generation has no downloadable result any more"
    if job.state is JobState.GENERATED and own:
        rt.store.update_job(job_id, result_url=url)
    else:
        # Out of the waiting queue first, so admission cannot send it after the move.
        # Admitted already, it holds a slot: the move below frees it, and its submit
        # message then finds it generated and stops.
        rt.store.unqueue(run_id, job_id)
        moved = rt.store.move(
            job_id,
            run_id,
            JobState.GENERATED,
            expect=[job.state],
            generation_id=gid,
            result_url=url,
            generated_at=rt.now(),
            error="",
            failed_step="",
            adopted_by="audit",
        )
        if not moved.ok:
            return False, f"the job moved meanwhile (was {moved.before}); audit again"
        rt.store.clear_job_fields(job_id, "needs_operator", "send_settled")
    return _deliver(rt, run_id, job_id, undo=JobState.FAILED)


def _redeliver(rt: Runtime, run_id: str, finding: Finding) -> tuple[bool, str]:
    """Deliver a delivered job's generation again, when its result is still there."""
    job_id = finding.job_id
    job = load(rt, run_id, job_id)
    if job is None or job.state is not JobState.DELIVERED or job.generation_id is None:
        return False, "the job is no longer delivered with a generation; audit again"
    url = _fresh_url(rt, job_id, job.generation_id)
    if url is None:
        return False, "the generation has no downloadable result any more"
    moved = rt.store.move(
        job_id, run_id, JobState.GENERATED, expect=[JobState.DELIVERED], result_url=url
    )
    if not moved.ok:
        return False, f"the job moved meanwhile (was {moved.before}); audit again"
    return _deliver(rt, run_id, job_id, undo=JobState.DELIVERED)


def _deliver(rt: Runtime, run_id: str, job_id: str, *, undo: JobState) -> tuple[bool, str]:
    """Run the delivery step; on failure the job goes to ``undo`` (failed for an adopted
    generation, back to delivered for a redelivery, so its record stays as it was)."""
    try:
        deliver_job(rt, run_id, job_id)
    except SeedqError as exc:  # the operator sees it, nothing is lost
        reason = str(exc)
        if undo is JobState.FAILED and isinstance(exc, TransientError):
            # Generated, the job holds a delivery lease: the workers deliver it once the
            # provider or the store is back, as any paid clip. Failing it would drop it.
            return False, f"{reason}; left generated, the workers will deliver it"
        fields = {"error": reason, "failed_step": "deliver"} if undo is JobState.FAILED else {}
        rt.store.move(job_id, run_id, undo, expect=[JobState.GENERATED], **fields)
        return False, reason
    stored = rt.store.job(job_id)
    if stored.get("state") != JobState.DELIVERED:
        return False, f"delivery did not finish (job is {stored.get('state')})"
    return True, f"delivered to {stored.get('output_uri', '')}"
