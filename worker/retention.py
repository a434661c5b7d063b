"""Bounded Redis: a run that has ended is archived to the output storage, and pruned
from Redis once it is older than ``SEEDQ_RETENTION_DAYS``.

Archiving writes the run's JSON-lines report (``seedq.report``) to
``<output>/_runs/<run_id>.jsonl``, beside the clips, notes it in the run's hash, and
compacts the hashes of its delivered, billed jobs (``JobStore.compact_jobs``). Pruning
deletes, a batch at a time, each job record the run still owns with its
generation-ownership keys, then the run's own keys (``JobStore.prune_jobs``,
``JobStore.drop_run``). A job that is not terminal, holds a slot or a delivery lease, or
waits for its bill is never deleted: it goes to the end of the run's list and the run
stays until it can go. After pruning, the clip's sidecar is what proves the job
delivered (``worker.submitting`` checks it before paying again).

The tick runs :func:`retention_pass` every :data:`PASS_EVERY_S`: it archives at most one
run and prunes at most :data:`PRUNE_BATCH` jobs, so a tick stays short (archiving a
large run reads all its records once, like ``seedq report``). ``seedq prune`` calls
the same functions without the bounds. Every step can be repeated: a crash costs a
rewrite of the same archive, or a prune started again from the list's head.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from producer.jobs import JobSpec
from producer.resume import sidecar_proves_delivered
from seedq.contract import JobState
from seedq.notify import run_finished
from seedq.report import archive_rows, to_jsonl
from seedq.store import READ_BATCH, JobStore
from storage.base import Storage, sha256_file
from worker.errors import Undeliverable
from worker.job import Job
from worker.runtime import Runtime

log = logging.getLogger(__name__)

ARCHIVE_PREFIX = "_runs"
ARCHIVE_TYPE = "application/x-ndjson"
PASS_EVERY_S = 10.0
PRUNE_BATCH = 500  # jobs per pass; a 100,000-job run is gone in about half an hour
DAY_S = 86400.0
BUSY = "busy"


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What retention needs to know of a run."""

    id: str
    name: str
    status: str
    counts: dict[str, int]
    total: int
    created_at: float
    archived_at: float | None
    archived_counts: dict[str, int] | None = None  # the counts its archive was made of


@dataclass(frozen=True, slots=True)
class Pruned:
    """One step of pruning a run: job records deleted, ids looked at, ids kept for
    later (busy), and whether the run itself is gone."""

    jobs: int
    looked: int
    kept: list[str]
    run_gone: bool


def archive_key(run_id: str) -> str:
    return f"{ARCHIVE_PREFIX}/{run_id}.jsonl"


def ended(run: RunFacts) -> bool:
    """Every job of the run terminal, and the run not waiting to start or registering:
    ``seedq.notify.run_finished``, the one answer (a cancelled run too, once its jobs
    are terminal)."""
    return run_finished(run.status, run.counts, run.total)


def to_archive(runs: Sequence[RunFacts]) -> list[str]:
    """The ended runs not archived yet, or whose jobs moved since (retried), oldest
    first. Only runs with jobs left: one being pruned keeps its archive."""
    return [
        r.id
        for r in runs
        if ended(r) and (r.archived_at is None or _nonzero(r.counts) != r.archived_counts)
    ]


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {state: n for state, n in counts.items() if n}


def to_prune(runs: Sequence[RunFacts], now_s: float, older_than_s: float) -> list[str]:
    """The ended, archived runs created at least ``older_than_s`` ago, oldest first.
    An archived run whose list is empty is one being pruned (or one with no jobs)."""
    return [
        r.id
        for r in runs
        if r.archived_at is not None
        and (ended(r) or r.total == 0)
        and now_s - r.created_at >= older_than_s
    ]


def due_now(runs: Sequence[RunFacts], now_s: float, older_than_s: float) -> list[RunFacts]:
    """The runs ``seedq prune`` takes: ended (or archived and partly pruned already)
    and created at least ``older_than_s`` ago, archived or not (it archives them)."""
    return [
        r
        for r in runs
        if (ended(r) or (r.archived_at is not None and r.total == 0))
        and now_s - r.created_at >= older_than_s
    ]


def read_runs(store: JobStore) -> list[RunFacts]:
    """Every run as retention sees it, oldest first (one round trip after the list)."""
    ids = store.all_run_ids()
    facts = []
    for run_id, (data, counts, total) in zip(ids, store.run_overviews(ids), strict=True):
        if not data:
            continue  # listed but without a record: nothing of it to archive
        archived = data.get("archived_at")
        try:
            archived_counts = json.loads(data.get("archived_counts") or "null")
        except ValueError:
            archived_counts = None
        facts.append(
            RunFacts(
                id=run_id,
                name=data.get("name", ""),
                status=data.get("status", ""),
                counts=counts,
                total=total,
                created_at=float(data.get("created_at") or 0),
                archived_at=float(archived) if archived else None,
                archived_counts=archived_counts if isinstance(archived_counts, dict) else None,
            )
        )
    return facts


def archive_run(store: JobStore, storage: Storage, run_id: str, now_s: float) -> str:
    """Write the run's report to the output storage (the same key each time, so a
    repeat overwrites it), note it in the run, then compact its delivered jobs; the
    archive's address. Raises the storage's error when it cannot be written: nothing is
    noted then, and the next pass tries again."""
    counts = store.run_overviews([run_id])[0][1]  # read first: what the rows show, or older
    rows = archive_rows(store, run_id)
    with tempfile.TemporaryDirectory(prefix="seedq-archive-") as folder:
        path = Path(folder) / "report.jsonl"
        path.write_text(to_jsonl(rows), encoding="utf-8")
        stored = storage.put_file(
            archive_key(run_id), path, sha256=sha256_file(path), content_type=ARCHIVE_TYPE
        )
    store.mark_archived(run_id, stored.uri, now_s, _nonzero(counts))
    ids = [row.id for row in rows if row.status == "delivered"]
    for start in range(0, len(ids), READ_BATCH):
        store.compact_jobs(run_id, ids[start : start + READ_BATCH])
    return stored.uri


def prune_step(store: JobStore, run_id: str, batch: int = PRUNE_BATCH) -> Pruned:
    """Delete up to ``batch`` of the run's jobs from the head of its list; the run's own
    keys go when its list is empty."""
    ids = store.run_job_ids(run_id, 0, batch - 1)
    if not ids:
        store.drop_run(run_id)
        return Pruned(0, 0, [], True)
    verdicts = store.prune_jobs(run_id, ids)
    kept = [job_id for job_id in ids if verdicts[job_id] == BUSY]
    store.shift_run_jobs(run_id, len(ids), kept)
    deleted = sum(1 for v in verdicts.values() if v == "pruned")
    return Pruned(deleted, len(ids), kept, False)


def prune_run(store: JobStore, run_id: str, batch: int = PRUNE_BATCH) -> Iterator[Pruned]:
    """Prune the whole run, a batch per step; stops early (the run kept) once every
    job left has been looked at since the list last shrank: all of them are busy."""
    idle = 0  # ids looked at, and all kept, since the list last shrank
    while True:
        step = prune_step(store, run_id, batch)
        yield step
        if step.run_gone:
            return
        idle = idle + step.looked if step.looked == len(step.kept) else 0
        if idle and idle >= store.run_job_count(run_id):
            return


@dataclass(slots=True)
class PassReport:
    archived: str | None = None
    pruned_run: str | None = None
    pruned_jobs: int = 0


def retention_pass(
    store: JobStore, storage: Storage, *, now_s: float, retention_days: float
) -> PassReport:
    """One bounded step of retention (see the module docstring): archive the oldest
    ended run not archived yet, then prune one batch of the oldest run due."""
    report = PassReport()
    runs = read_runs(store)
    for run_id in to_archive(runs)[:1]:
        try:
            uri = archive_run(store, storage, run_id, now_s)
        except Exception:  # the storage is away: the next pass tries again
            log.exception("run %s: cannot archive its report", run_id)
        else:
            log.info("run %s: report archived at %s", run_id, uri)
            report.archived = run_id
    if retention_days <= 0:
        return report
    for run_id in to_prune(runs, now_s, retention_days * DAY_S)[:1]:
        step = prune_step(store, run_id)
        report.pruned_run, report.pruned_jobs = run_id, step.jobs
        if step.run_gone:
            log.info("run %s: pruned from Redis", run_id)
    return report


def retain(store: JobStore, storage: Storage, *, now_s: float, retention_days: float) -> None:
    """The tick's call: a retention pass when one is due (every :data:`PASS_EVERY_S`)."""
    if store.retention_due(now_s, PASS_EVERY_S):
        retention_pass(store, storage, now_s=now_s, retention_days=retention_days)


def delivered_before(rt: Runtime, job: Job) -> bool:
    """Whether the clip and sidecar in the output storage prove this registered job
    delivered already (``producer.resume``), by this provider: then it is moved to
    ``delivered`` without paying again, and True. This is how a job whose record was
    pruned is still skipped when its manifest runs again; a run submitted with
    ``--force`` regenerates on purpose and is never skipped.

    A key holding another job's clip (``worker.delivery.held_by_another``) fails the job
    here, with Undeliverable, before anything is paid: its clip could not be delivered
    without overwriting that one, which only the job field ``overwrite`` allows."""
    # Here, not at the top: the deliver step imports the submit step, which calls this.
    from worker.delivery import held_by_another, overwrites, sidecar_key

    try:
        spec = JobSpec.from_record({**job.spec, "id": job.id})  # the key, not in the spec
    except (TypeError, ValueError):
        return False
    video = rt.storage.stat(spec.output_key)
    if video is None:
        return False
    side = rt.storage.get_json(sidecar_key(spec.output_key))
    taken = None if overwrites(job) else held_by_another(job.id, video, side)
    if taken is not None:
        raise Undeliverable(f"{taken}; not generated, nothing was paid")
    if rt.store.run_forced(job.run_id):
        return False
    provider = rt.settings.provider_url
    if not sidecar_proves_delivered(spec, side, video_bytes=video.size, provider_url=provider):
        return False
    # bandit B101: narrows the type: sidecar_proves_delivered just returned True for it.
    assert side is not None  # nosec B101
    facts = side.get("video") or {}
    moved = rt.store.move(
        job.id,
        job.run_id,
        JobState.DELIVERED,
        expect=[JobState.REGISTERED],
        # Paid for by the run that delivered it: nothing is charged or billed here.
        reserve_more=-job.number("reserved_cost"),
        billing_counted=1,
        cost=0,
        output_uri=video.uri,
        size_bytes=video.size,
        sha256=str(facts.get("sha256") or ""),
        duration_s=float(facts.get("duration_s") or 0.0),
        warnings="[]",
        delivered_at=rt.now(),
        delivered_by=str(side.get("run_id") or ""),
    )
    log.info("job %s: delivered before (sidecar at %s); not sent again", job.id, video.uri)
    return moved.ok
