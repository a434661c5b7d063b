"""Submitting a validated set of manifests: register the run, then each job, then send
one submit task per job that needs one.

The whole input is validated first (``producer.plan.check``); only then does this
second pass read it again and write. A repeated submission registers nothing twice and
skips what was delivered, so an interrupted submit is simply run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from producer.errors import Problem, SubmitError
from producer.jobs import JobSpec
from producer.manifest import ModelResolver, ReadOptions
from producer.plan import iter_jobs
from seedq import contract
from seedq.store import Decision, JobStore, new_run_id


class TaskSender(Protocol):
    """Sends one job task; a Celery-backed one lives in :func:`celery_sender`."""

    def __call__(self, messages: list[contract.JobMessage]) -> None: ...


@dataclass(slots=True)
class SubmitResult:
    run_id: str
    name: str
    enqueued: int = 0
    counts: dict[Decision, int] = field(default_factory=lambda: {d: 0 for d in Decision})
    changed: list[str] = field(default_factory=list)


def celery_sender(app: Any) -> TaskSender:
    """Sends on one pooled broker connection, instead of acquiring one per message."""

    def send(messages: list[contract.JobMessage]) -> None:
        with app.producer_or_acquire() as producer:
            for msg in messages:
                app.send_task(
                    contract.TASK_SUBMIT,
                    kwargs=dict(msg),
                    queue=contract.QUEUE_SUBMIT,
                    producer=producer,
                )

    return send


def _valid_jobs(items: Iterable[object]) -> Iterator[JobSpec]:
    for item in items:
        if isinstance(item, Problem) and item.warning:
            continue
        if not isinstance(item, JobSpec):
            # The validation pass saw a valid file; a difference now means it changed.
            raise SubmitError("the manifest changed while it was being submitted; run it again")
        yield item


def submit(
    paths: list[Path],
    opts: ReadOptions,
    resolve_model: ModelResolver,
    store: JobStore,
    send: TaskSender,
    *,
    name: str | None = None,
    priority: int | None = None,
    force: bool = False,
    run_id: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SubmitResult:
    """Register and enqueue jobs already validated by ``check``; returns what happened."""
    run_id = run_id or new_run_id()
    name = name or ", ".join(p.stem for p in paths)
    store.create_run(
        run_id, name, {"manifests": [str(p) for p in paths], "priority": priority, "force": force}
    )
    result = SubmitResult(run_id, name)

    def triples() -> Iterator[tuple[str, str, dict[str, Any]]]:
        for job in _valid_jobs(iter_jobs(paths, opts, resolve_model)):
            record = job.to_record()
            if priority is not None:
                record["priority"] = priority
            yield job.id, job.fingerprint, record

    for batch in store.register(run_id, triples(), force=force):
        for decision, count in batch.counts.items():
            result.counts[decision] += count
        result.changed.extend(batch.changed)
        if batch.to_enqueue:
            send([{"run_id": run_id, "job_id": jid} for jid in batch.to_enqueue])
            result.enqueued += len(batch.to_enqueue)
        if on_batch:
            on_batch(result.enqueued)
    store.set_run_status(run_id, "active", enqueued=result.enqueued)
    return result
