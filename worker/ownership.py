"""Which succeeded generation is whose, for the audit: pure decisions over a run's job
records, the provider's succeeded generations and the ``seedq:gen`` owners.

A generation is a job's when the job records it as its ``generation_id``, when its
``seedq:gen`` key names the job, or when nobody claimed it and its echoed parameters
match what the job sent (``worker.reconcile.matches``, with the window opened back to
the job's registration, since a resend overwrites the send time). Unclaimed generations
are given one to one, first to jobs still needing a video; twins (identical parameters)
are interchangeable, so any one-to-one choice is right.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from provider.models import Generation
from worker.audit_facts import JobFacts
from worker.findings import Finding, Kind
from worker.reconcile import matches

# States a paid generation may be adopted from: nothing else of the job is at the
# provider. A submitted or generated job is adopted only into its own generation.
ADOPTABLE = frozenset({"registered", "submitting", "failed", "cancelled"})
NO_PROMPT = ""  # the index bucket of jobs that sent no prompt: they may match any


def shared_generations(jobs: Sequence[JobFacts], owners: Mapping[str, str]) -> list[Finding]:
    """Generations recorded by two jobs, or recorded by one job and owned by another."""
    claimants: dict[str, list[str]] = defaultdict(list)
    for job in jobs:
        if job.generation_id:
            claimants[job.generation_id].append(job.id)
    found = []
    for gid, ids in claimants.items():
        owner = owners.get(gid)
        others = [j for j in ids if j != owner] if owner else ids[1:]
        if owner is None and len(ids) < 2:
            continue
        for job_id in others:
            holder = owner or ids[0]
            found.append(
                Finding(
                    Kind.SHARED_GENERATION,
                    job_id,
                    gid,
                    f"generation also claimed by job {holder}; an operator must decide",
                )
            )
    return found


def paid_generations(
    jobs: Sequence[JobFacts],
    gens: Mapping[str, Generation],
    owners: Mapping[str, str],
    shared: set[str],
    now: float,
) -> dict[str, list[str]]:
    """Job id → its succeeded generations: its own first, then claimed, then matched."""
    ours = {job.id for job in jobs}
    paid: dict[str, list[str]] = defaultdict(list)
    recorded = {job.generation_id for job in jobs if job.generation_id}
    for job in jobs:
        gid = job.generation_id
        if gid and gid in gens and gid not in shared and owners.get(gid, job.id) == job.id:
            paid[job.id].append(gid)
    for gid, owner in owners.items():
        if gid in gens and owner in ours and gid not in paid[owner] and gid not in shared:
            paid[owner].append(gid)
    unclaimed = sorted(
        (g for gid, g in gens.items() if gid not in owners and gid not in recorded),
        key=lambda g: (g.enqueued_at or 0.0, g.generation_id),
    )
    # Indexed by prompt (a match echoes every sent parameter, the prompt included), so
    # an account's many unclaimed generations are not each compared with every job.
    by_prompt: dict[str, list[JobFacts]] = defaultdict(list)
    for job in jobs:
        if job.sent_params is not None:
            by_prompt[_prompt(job.sent_params)].append(job)
    for gen in unclaimed:
        key = _prompt(gen.params())
        alike = by_prompt.get(key, []) + (by_prompt.get(NO_PROMPT, []) if key else [])
        candidates = [job for job in alike if _sent_this(gen, job, now)]
        if not candidates:
            continue  # another run's, or made outside seedq
        needy = [job for job in candidates if _needs_video(job, paid[job.id])]
        paid[(needy or candidates)[0].id].append(gen.generation_id)
    return paid


def _prompt(params: Mapping[str, Any]) -> str:
    return json.dumps(params["prompt"]) if "prompt" in params else NO_PROMPT


def _sent_this(gen: Generation, job: JobFacts, now: float) -> bool:
    # bandit B101: narrows the type: callers pass only jobs whose parameters were sent.
    assert job.sent_params is not None  # nosec B101
    return matches(gen, model=job.model, sent=job.sent_params, started_at=job.created_at, now=now)


def _needs_video(job: JobFacts, paid: list[str]) -> bool:
    return job.state in ADOPTABLE and not paid
