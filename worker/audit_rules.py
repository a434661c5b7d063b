"""The audit of a run, as pure decisions: what the job store, the provider's history
of succeeded generations and the output store say together.

Three ledgers should agree: every succeeded generation (paid for) belongs to one job
that is delivered, every delivered job has its video and sidecar stored as its record
says, and what the run recorded as billed is what the provider charged for the run's
generations. :func:`audit` takes facts gathered elsewhere (``worker.auditor`` reads
them and repairs; the facts are ``worker.audit_facts``) and returns the findings
(``worker.findings``), each with what ``--repair`` would do. Which generation is whose
is decided in ``worker.ownership``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from provider.models import Generation
from storage.base import StoredObject
from worker.audit_facts import DELIVERED, IN_FLIGHT, SUBMITTING, JobFacts, OutputFacts
from worker.findings import Finding, Kind, Repair
from worker.ownership import ADOPTABLE, paid_generations, shared_generations


def audit(
    jobs: Sequence[JobFacts],
    succeeded: Iterable[Generation],
    owners: Mapping[str, str],
    outputs: Mapping[str, OutputFacts],
    *,
    now: float,
    costs: Mapping[str, float | None] | None = None,
) -> list[Finding]:
    """Every finding for one run's jobs.

    ``succeeded``: the provider's succeeded generations of the run's models (any run's)
    enqueued since the run began; ``owners``: generation id → the job its ``seedq:gen``
    key names, for every id known (absent: claimed by none); ``outputs``: facts of each
    delivered job's objects; ``costs``: generation id → what the provider charged for
    it (None: not charged yet), for the generations the jobs own; without it the billed
    totals are not compared.
    """
    gens = {g.generation_id: g for g in succeeded if g.status == "succeeded"}
    findings = shared_generations(jobs, owners)
    shared = {f.generation_id for f in findings}
    paid = paid_generations(jobs, gens, owners, shared, now)
    for job in jobs:
        findings += _generation_findings(job, paid.get(job.id, []), gens)
    findings += _duplicate_outputs(jobs)
    shared_keys = {f.job_id for f in findings if f.kind is Kind.DUPLICATE_OUTPUT}
    for job in jobs:
        if job.state == DELIVERED:
            facts = outputs.get(job.id, OutputFacts(None, None))
            findings += _output_findings(job, facts, shared=job.id in shared_keys)
    if costs is not None:
        findings += billed_findings(jobs, costs)
    order = {job.id: n for n, job in enumerate(jobs)}
    return sorted(findings, key=lambda f: order.get(f.job_id, len(order)))  # manifest order


def _generation_findings(
    job: JobFacts, paid: list[str], gens: Mapping[str, Generation]
) -> list[Finding]:
    if not paid:
        return []
    found: list[Finding] = []
    if job.state == DELIVERED:
        primary = job.generation_id or ""
    else:
        primary = paid[0]
        found.append(_undelivered(job, primary))
    for gid in paid:
        if gid != primary:
            found.append(
                Finding(
                    Kind.DUPLICATE_GENERATION,
                    job.id,
                    gid,
                    f"a second succeeded generation for this job (paid twice; the job's "
                    f"is {primary or 'none'})",
                )
            )
    return found


def _undelivered(job: JobFacts, gid: str) -> Finding:
    own = gid == job.generation_id
    if job.state in IN_FLIGHT and own:
        why = f"succeeded at the provider, job still {job.state} (delivery pending or stalled)"
        return Finding(Kind.PAID_NOT_DELIVERED, job.id, gid, why, Repair.DELIVER)
    if job.state == SUBMITTING and not own:
        # Its worker's reconcile adopts it (or is sending it right now): adopting it here
        # could leave the worker's own enqueue unowned, and paid for twice.
        why = (
            "succeeded at the provider (claimed by no job, matches what the job sent), "
            "job is submitting: its reconcile adopts it; audit again after the run"
        )
        return Finding(Kind.PAID_NOT_DELIVERED, job.id, gid, why)
    if job.state in ADOPTABLE:
        how = "the job's generation" if own else "claimed by no job, matches what the job sent"
        why = f"succeeded at the provider ({how}), job is {job.state}"
        return Finding(Kind.PAID_NOT_DELIVERED, job.id, gid, why, Repair.DELIVER)
    why = (
        f"succeeded at the provider, job is {job.state} with another generation "
        f"({job.generation_id}); an operator must decide"
    )
    return Finding(Kind.PAID_NOT_DELIVERED, job.id, gid, why)


def _duplicate_outputs(jobs: Sequence[JobFacts]) -> list[Finding]:
    """Two delivered jobs stored at one output key: the later write replaced the other's
    clip. (Equal digests are no sign: a provider may render equal bytes for two jobs.)"""
    groups: dict[str, list[JobFacts]] = defaultdict(list)
    for job in jobs:
        if job.state == DELIVERED and job.output_key:
            groups[job.output_key].append(job)
    return [
        Finding(
            Kind.DUPLICATE_OUTPUT,
            job.id,
            job.generation_id or "",
            f"stored at the same output key as job {group[0].id}",
        )
        for group in groups.values()
        for job in group[1:]
    ]


def _output_findings(job: JobFacts, facts: OutputFacts, *, shared: bool) -> list[Finding]:
    """A delivered job's video and sidecar against its record (and each other)."""
    gid = job.generation_id or ""
    # Stored elsewhere than the configured store keeps it: a second copy, or the audit
    # reads another store than the workers wrote to. Redelivering would add a copy.
    elsewhere = bool(job.output_uri and facts.uri and job.output_uri != facts.uri)
    fix = Repair.REDELIVER if gid and not shared and not elsewhere else Repair.NONE
    video = facts.video
    if video is None:
        why = f"no object at {job.output_key}"
        if elsewhere:
            why += f" here ({facts.uri}); delivered to {job.output_uri}: check SEEDQ_OUTPUT"
        return [Finding(Kind.MISSING_OUTPUT, job.id, gid, why, fix)]
    found: list[Finding] = []
    if elsewhere:
        why = f"stored at {facts.uri} and recorded at {job.output_uri}: two copies"
        found.append(Finding(Kind.DUPLICATE_OUTPUT, job.id, gid, why))
    problems = _mismatches(job, video, facts.sidecar)
    if problems:
        found.append(Finding(Kind.OUTPUT_MISMATCH, job.id, gid, "; ".join(problems), fix))
    if facts.invalid:
        found.append(Finding(Kind.INVALID_OUTPUT, job.id, gid, facts.invalid, fix))
    if facts.sidecar is None:
        found.append(Finding(Kind.MISSING_SIDECAR, job.id, gid, "no sidecar beside the video", fix))
    return found


def _mismatches(job: JobFacts, video: StoredObject, sidecar: dict[str, Any] | None) -> list[str]:
    problems = []
    if job.size_bytes is not None and video.size != job.size_bytes:
        problems.append(f"stored size {video.size} != recorded {job.size_bytes}")
    if video.sha256 and job.sha256 and video.sha256 != job.sha256:
        problems.append("stored SHA-256 differs from the job record")
    if sidecar is not None:
        side = sidecar.get("video")
        side = side if isinstance(side, dict) else {}
        if sidecar.get("job_id") != job.id:
            problems.append(f"sidecar names job {sidecar.get('job_id')!r}")
        if side.get("sha256") and video.sha256 and side.get("sha256") != video.sha256:
            problems.append("stored SHA-256 differs from the sidecar")
        if side.get("size_bytes") is not None and side.get("size_bytes") != video.size:
            problems.append(f"stored size {video.size} != sidecar {side.get('size_bytes')}")
    return problems


# Charged amounts are decimal strings summed as floats: differences below this are the
# sums' rounding, not money (a cent is 10,000 times more).
BILLED_TOLERANCE = 1e-6
NAMED_JOBS = 5  # jobs a billed_mismatch names; the rest are counted


def billed_findings(jobs: Sequence[JobFacts], costs: Mapping[str, float | None]) -> list[Finding]:
    """The run's recorded billed total against what the provider charged for the same
    generations (each job's own and the stuck one it retried, each counted once); one
    run-wide finding when they differ, naming the jobs whose figures disagree.

    Only jobs that recorded a billed cost are compared: the workers learn a cost some
    time after delivery, so a job without one yet is not a difference (the finding
    counts them when there is one). A generation the provider has not charged (cost
    None, or not found) counts as nothing on its side."""
    counted: set[str] = set()
    recorded = reported = 0.0
    differing: list[str] = []
    unrecorded = 0
    for job in jobs:
        if job.billed_cost is None:
            unrecorded += 1
            continue
        charged = 0.0
        for gid in job.owned:
            cost = costs.get(gid)
            if gid not in counted and cost is not None:
                charged += cost
            counted.add(gid)
        recorded += job.billed_cost
        reported += charged
        if abs(job.billed_cost - charged) > BILLED_TOLERANCE:
            differing.append(f"{job.id} (recorded ${job.billed_cost:.4f}, provider ${charged:.4f})")
    if abs(recorded - reported) <= BILLED_TOLERANCE and not differing:
        return []
    named = "; ".join(differing[:NAMED_JOBS])
    if len(differing) > NAMED_JOBS:
        named += f"; and {len(differing) - NAMED_JOBS} more"
    why = (
        f"the run recorded ${recorded:.4f} billed, the provider reports ${reported:.4f} "
        f"for the same {len(counted)} generation(s): {named}"
    )
    if unrecorded:
        why += f" ({unrecorded} job(s) with no billed cost recorded yet are not compared)"
    return [
        Finding(
            Kind.BILLED_MISMATCH,
            "",
            "",
            why,
            recorded=round(recorded, 6),
            reported=round(reported, 6),
        )
    ]
