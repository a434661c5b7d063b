"""The run half of the job store: a run's record, status and jobs, and its waiting
queue (the jobs registered and not yet admitted). :class:`RunRecords` is a base of
:class:`seedq.store.JobStore`, which is what callers hold; it is apart only to keep
each file readable.

The texts of :data:`REDACTED_FIELDS` (a job's ``error`` and ``last_error``, a run's
``reason``) are often an exception's message, which may quote a presigned URL or a
credential; they are redacted here, as they are written, so Redis never holds one
whoever the caller (reports and Flower redact again at output).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from seedq import keys, scripts
from seedq.contract import RunStatus
from seedq.logs import Redactor
from seedq.records import (
    STUCK_FAILURES,
    STUCK_RETRIES,
    QueueSnapshot,
    RunGauges,
    RunInfo,
    WaitingRun,
    decoded,
    waiting_score,
)

# Fields whose text may come from an exception (a provider's answer, a URL quoted in it).
REDACTED_FIELDS = frozenset({"error", "last_error", "reason"})


class RunRecords:
    """Runs and their waiting queues (see :class:`seedq.store.JobStore`).

    ``redact`` cleans the texts of :data:`REDACTED_FIELDS` before they are stored; the
    default knows no secret of its own but removes bearer tokens and every URL's query
    credentials (:mod:`seedq.credentials`). A worker passes one with its secrets too."""

    def __init__(self, client: redis.Redis, redact: Callable[[str], str] | None = None) -> None:
        self.redis = client
        self.redact = redact or Redactor()
        self._activate = scripts.register(client, "activate")

    def _redacted(self, fields: Mapping[str, str | int | float]) -> dict[str, str | int | float]:
        """``fields`` as they may be stored: each of :data:`REDACTED_FIELDS` redacted."""
        return {
            name: self.redact(value)
            if name in REDACTED_FIELDS and isinstance(value, str)
            else value
            for name, value in fields.items()
        }

    # -- runs --------------------------------------------------------------------------

    def create_run(self, run_id: str, name: str, meta: dict[str, Any]) -> None:
        now = time.time()
        with self.redis.pipeline() as pipe:
            pipe.hset(
                keys.run(run_id),
                mapping={
                    "name": name,
                    "created_at": now,
                    "status": "registering",
                    "meta": json.dumps(meta, sort_keys=True),
                },
            )
            pipe.zadd(keys.RUNS, {run_id: now})
            pipe.execute()

    def set_run_status(self, run_id: str, status: str, **fields: str | int | float) -> None:
        mapping: dict[str, str | int | float] = {"status": status, **self._redacted(fields)}
        self.redis.hset(keys.run(run_id), mapping=mapping)  # type: ignore[arg-type]

    def activate_run(self, run_id: str, **fields: str | int | float) -> bool:
        """``registering`` -> ``active`` (other fields set either way); False when the run
        was moved meanwhile (paused, cancelled) and keeps its status."""
        key = keys.run(run_id)
        if fields:
            self.redis.hset(key, mapping=self._redacted(fields))  # type: ignore[arg-type]
        return bool(self._activate(keys=[key], args=[RunStatus.REGISTERING, RunStatus.ACTIVE]))

    def run_status(self, run_id: str) -> str | None:
        raw = self.redis.hget(keys.run(run_id), "status")
        return decoded(raw) if raw else None

    def run_statuses(self, run_ids: Sequence[str]) -> list[str]:
        """Each run's status (``""`` for none), in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hget(keys.run(run_id), "status")
            return [decoded(v) for v in pipe.execute()]

    def run_reason(self, run_id: str) -> str:
        """Why the run is paused, as stored now (``""`` for no reason)."""
        return decoded(self.redis.hget(keys.run(run_id), "reason"))

    def pause_run(self, run_id: str, reason: str) -> None:
        """Stop admitting the run's jobs until resumed; the reason is for the operator."""
        self.redis.hset(
            keys.run(run_id), mapping={"status": RunStatus.PAUSED, "reason": self.redact(reason)}
        )

    def run_job_ids(self, run_id: str, start: int = 0, end: int = -1) -> list[str]:
        values: list[Any] = self.redis.lrange(keys.run_jobs(run_id), start, end)
        return [decoded(v) for v in values]

    def run(self, run_id: str) -> RunInfo | None:
        raw: dict[Any, Any] = self.redis.hgetall(keys.run(run_id))
        if not raw:
            return None
        data = {decoded(k): decoded(v) for k, v in raw.items()}
        raw_counts: dict[Any, Any] = self.redis.hgetall(keys.run_counts(run_id))
        counts = {decoded(k): int(v) for k, v in raw_counts.items()}
        return RunInfo(
            id=run_id,
            name=data.get("name", ""),
            created_at=float(data.get("created_at", 0)),
            status=data.get("status", "?"),
            total=int(self.redis.llen(keys.run_jobs(run_id))),
            counts=counts,
            meta=json.loads(data.get("meta", "{}")),
            reason=data.get("reason", ""),
            stuck_retries=int(data.get(STUCK_RETRIES, 0)),
            stuck_failures=int(data.get(STUCK_FAILURES, 0)),
        )

    def runs(self, limit: int = 50) -> list[RunInfo]:
        values: list[Any] = self.redis.zrange(keys.RUNS, -limit, -1)
        ids = [decoded(v) for v in values]
        return [info for rid in ids if (info := self.run(rid)) is not None]

    # -- waiting queues ----------------------------------------------------------------

    def requeue(self, run_id: str, job_id: str, job_priority: int, run_priority: int) -> None:
        """Put a registered job back in its run's waiting queue, and the run in
        admission's set; the score follows register.lua (priority, then first in)."""
        seq = int(self.redis.incr(keys.SEQUENCE))
        with self.redis.pipeline() as pipe:  # MULTI: the queue and the run's entry together
            pipe.zadd(keys.run_waiting(run_id), {job_id: waiting_score(job_priority, seq)}, nx=True)
            pipe.zadd(keys.ADMISSION_RUNS, {run_id: run_priority}, nx=True)
            pipe.hset(keys.run(run_id), "priority", run_priority)
            pipe.execute()

    def unqueued(self, run_id: str, job_ids: Sequence[str]) -> list[str]:
        """The jobs neither waiting in the run's queue nor holding an in-flight slot.

        Per job, the queue is read before the in-flight set: admission only moves a job
        from the first to the second, so one moving meanwhile is seen in one of them."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.zscore(keys.run_waiting(run_id), job_id)
                pipe.zscore(keys.IN_FLIGHT, job_id)
            scores = pipe.execute()
        return [
            job_id
            for n, job_id in enumerate(job_ids)
            if scores[2 * n] is None and scores[2 * n + 1] is None
        ]

    def offer_run(self, run_id: str, priority: int) -> None:
        """Enter the run in admission's set of runs with waiting jobs (kept if in)."""
        self.redis.zadd(keys.ADMISSION_RUNS, {run_id: priority}, nx=True)

    def withdraw_run(self, run_id: str) -> None:
        """Take the run out of admission's set: none of its jobs is admitted any more."""
        self.redis.zrem(keys.ADMISSION_RUNS, run_id)

    def unqueue(self, run_id: str, job_id: str) -> None:
        """Take a job out of its run's waiting queue (admission cannot send it then)."""
        self.redis.zrem(keys.run_waiting(run_id), job_id)

    def drop_waiting(self, run_id: str) -> None:
        """Empty the run's waiting queue."""
        self.redis.delete(keys.run_waiting(run_id))

    # -- aggregates and scheduled runs -------------------------------------------------

    def queue_snapshot(self, recent_runs: int) -> QueueSnapshot:
        """What the exporter serves, in three round trips whatever the number of jobs
        (counters, queue lengths and one job per queue, never a scan): the in-flight
        count and the run lists; the ``recent_runs`` most recent runs' counters,
        budgets and queue lengths, and the runs with waiting jobs; then when the job at
        the head of each of their queues last changed state."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.IN_FLIGHT)
            pipe.zrange(keys.RUNS, -recent_runs, -1)
            pipe.zrange(keys.ADMISSION_RUNS, 0, -1)
            in_flight, recent, offered = pipe.execute()
        recent_ids = [decoded(v) for v in recent]
        offered_ids = [decoded(v) for v in offered]
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in recent_ids:
                pipe.hmget(keys.run(run_id), "name", "status")
                pipe.hgetall(keys.run_counts(run_id))
                pipe.hgetall(keys.run_budget(run_id))
                pipe.zcard(keys.run_waiting(run_id))
            for run_id in offered_ids:
                pipe.hmget(keys.run(run_id), "name", "status")
                pipe.zcard(keys.run_waiting(run_id))
                pipe.zrange(keys.run_waiting(run_id), 0, 0)
            rows = pipe.execute()
        runs = [
            _run_gauges(run_id, *rows[4 * n : 4 * n + 4]) for n, run_id in enumerate(recent_ids)
        ]
        rows = rows[4 * len(recent_ids) :]
        heads = [decoded(head[0]) if head else "" for head in rows[2::3]]
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in heads:
                pipe.hget(keys.job(job_id), "updated_at")
            since = pipe.execute()
        waiting = [
            WaitingRun(
                run_id,
                decoded(rows[3 * n][0]),
                decoded(rows[3 * n][1]),
                int(rows[3 * n + 1]),
                float(since[n]) if heads[n] and since[n] else None,
            )
            for n, run_id in enumerate(offered_ids)
        ]
        return QueueSnapshot(in_flight=int(in_flight), runs=runs, offered=waiting)

    def firing_of_task(self, task_id: str) -> str | None:
        """The firing (ISO time) a scheduled-run task claimed, if it claimed one."""
        return decoded(self.redis.get(keys.schedule_task(task_id))) or None

    def claim_firing(self, name: str, fired_at: str, task_id: str) -> bool:
        """Take schedule ``name``'s firing at ``fired_at`` for this task: True when it is
        this task's (first claim, or claimed by it before), False when another has it.
        Both claims expire after :data:`keys.SCHEDULE_FIRING_TTL_S`."""
        ttl_s = keys.SCHEDULE_FIRING_TTL_S
        key = keys.schedule_firing(name, fired_at)
        mine = self.redis.set(key, task_id, nx=True, ex=ttl_s)
        if not mine and decoded(self.redis.get(key)) != task_id:
            return False
        self.redis.set(keys.schedule_task(task_id), fired_at, ex=ttl_s)
        return True

    # -- retention (worker.retention) --------------------------------------------------

    def all_run_ids(self) -> list[str]:
        """Every run's id, oldest first."""
        return [decoded(v) for v in self.redis.zrange(keys.RUNS, 0, -1)]

    def run_overviews(
        self, run_ids: Sequence[str]
    ) -> list[tuple[dict[str, str], dict[str, int], int]]:
        """Each run's hash, its counts and its number of jobs, in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hgetall(keys.run(run_id))
                pipe.hgetall(keys.run_counts(run_id))
                pipe.llen(keys.run_jobs(run_id))
            rows = pipe.execute()
        return [
            (
                {decoded(k): decoded(v) for k, v in rows[3 * i].items()},
                {decoded(k): int(v) for k, v in rows[3 * i + 1].items()},
                int(rows[3 * i + 2]),
            )
            for i in range(len(run_ids))
        ]

    def run_forced(self, run_id: str) -> bool:
        """Whether the run was submitted with ``--force`` (regenerate what exists)."""
        try:
            meta = json.loads(decoded(self.redis.hget(keys.run(run_id), "meta")) or "{}")
        except ValueError:
            return False
        return isinstance(meta, dict) and bool(meta.get("force"))

    def run_job_count(self, run_id: str) -> int:
        return int(self.redis.llen(keys.run_jobs(run_id)))

    def mark_archived(self, run_id: str, uri: str, now: float, counts: dict[str, int]) -> None:
        """Note where the run's report was archived, and its jobs by state then (a run
        whose counts change afterwards, e.g. ``seedq retry``, is archived again)."""
        self.redis.hset(
            keys.run(run_id),
            mapping={
                "archived_at": now,
                "archive_uri": uri,
                "archived_counts": json.dumps(counts, sort_keys=True),
            },
        )

    def run_archive_uri(self, run_id: str) -> str:
        """Where the run's report was archived (``""``: not archived)."""
        return decoded(self.redis.hget(keys.run(run_id), "archive_uri"))

    def shift_run_jobs(self, run_id: str, count: int, keep: Sequence[str]) -> None:
        """Take the first ``count`` ids off the run's job list, putting ``keep`` back at
        its end (jobs a prune could not delete yet), in one MULTI."""
        with self.redis.pipeline() as pipe:
            pipe.ltrim(keys.run_jobs(run_id), count, -1)
            if keep:
                pipe.rpush(keys.run_jobs(run_id), *keep)
            pipe.execute()

    def drop_run(self, run_id: str) -> None:
        """Delete the run's own keys and take it out of every run set, in one MULTI: the
        last step of pruning it (its jobs are gone by then)."""
        with self.redis.pipeline() as pipe:
            pipe.delete(
                keys.run(run_id),
                keys.run_jobs(run_id),
                keys.run_counts(run_id),
                keys.run_waiting(run_id),
                keys.run_in_flight(run_id),
                keys.run_budget(run_id),
                keys.run_billing(run_id),
            )
            pipe.zrem(keys.RUNS, run_id)
            pipe.zrem(keys.ADMISSION_RUNS, run_id)
            pipe.srem(keys.TIMED_RUNS, run_id)
            pipe.srem(keys.NOTIFY_WATCH, run_id)
            pipe.execute()


def _run_gauges(run_id: str, head: list[Any], counts: Any, budget: Any, waiting: int) -> RunGauges:
    money = {decoded(k): float(v) for k, v in budget.items()}
    return RunGauges(
        run_id=run_id,
        name=decoded(head[0]),
        status=decoded(head[1]),
        counts={decoded(k): int(v) for k, v in counts.items()},
        waiting=int(waiting),
        spent=money.get("spent", 0.0),
        reserved=money.get("reserved", 0.0),
        cap=money.get("cap"),
    )
