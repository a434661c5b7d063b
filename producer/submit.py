"""Submitting validated jobs: register the run, then each job, then send one submit
task per job that needs one.

Callers validate everything first (``producer.plan.check``, spooling the valid jobs),
so nothing is written or sent for an invalid manifest. A repeated submission registers
nothing twice and skips what was delivered, so an interrupted submit is run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.errors import ManifestError
from producer.jobs import JobSpec
from producer.manifest import ModelResolver, ReadOptions
from producer.plan import CheckResult, check
from producer.spool import Spool
from seedq.admission import Admission, admission_for
from seedq.dispatch import Sender, admit_and_send
from seedq.store import Decision, JobStore, new_run_id


@dataclass(slots=True)
class SubmitResult:
    run_id: str
    name: str
    enqueued: int = 0  # registered and waiting for capacity (or started)
    started: int = 0  # admitted and sent to the workers during the submit
    counts: dict[Decision, int] = field(default_factory=lambda: {d: 0 for d in Decision})
    changed: list[str] = field(default_factory=list)


def submit(
    jobs: Iterable[JobSpec],
    store: JobStore,
    send: Sender,
    *,
    admission: Admission,
    name: str,
    manifests: list[str],
    priority: int | None = None,
    budget: float | None = None,
    force: bool = False,
    run_id: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    notify: Sequence[str] = (),
) -> SubmitResult:
    """Register already validated jobs (they wait for capacity in Redis) and send submit
    messages for those admitted at once; workers admit the rest as slots free up."""
    run_id = run_id or new_run_id()
    meta: dict[str, Any] = {
        "manifests": manifests,
        "priority": priority,
        "force": force,
        "budget": budget,
    }
    if notify:
        meta["notify"] = list(notify)  # webhooks of its events (worker.notify); no secret
    store.create_run(run_id, name, meta)
    if budget is not None:
        admission.budgets.set_cap(run_id, budget)
    result = SubmitResult(run_id, name)

    def triples() -> Iterator[tuple[str, str, dict[str, Any]]]:
        for job in jobs:
            record = job.to_record()
            if priority is not None:
                record["priority"] = priority
            yield job.id, record["fingerprint"], record

    batches = store.register(run_id, triples(), force=force, run_priority=priority or 0)
    for batch in batches:
        for decision, count in batch.counts.items():
            result.counts[decision] += count
        result.changed.extend(batch.changed)
        result.enqueued += len(batch.to_enqueue)
        result.started += admit_and_send(admission, send)
        if on_batch:
            on_batch(result.enqueued)
    # An operator may have paused (or cancelled) it while it registered: keep that.
    store.activate_run(run_id, enqueued=result.enqueued)
    result.started += admit_and_send(admission, send)
    return result


def validate_and_submit(
    paths: list[Path],
    opts: ReadOptions,
    resolve_model: ModelResolver,
    store: JobStore,
    send: Sender,
    *,
    auto_estimate_s: int = 10,
    name: str | None = None,
    **kw: Any,
) -> tuple[CheckResult, SubmitResult]:
    """Both passes: validate everything (raising :class:`ManifestError` with every
    problem, before anything is written), then register and enqueue."""
    with Spool() as spool:
        checked = check(
            paths, opts, resolve_model, auto_estimate_s=auto_estimate_s, on_job=spool.write
        )
        if checked.errors:
            raise ManifestError(checked.problems)
        name = name or ", ".join(p.stem for p in paths)
        kw.setdefault("admission", admission_for(store))
        done = submit(spool, store, send, name=name, manifests=[str(p) for p in paths], **kw)
    return checked, done
