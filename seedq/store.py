"""The job store: runs and jobs in Redis, the one source of truth for what is paid for.

:class:`JobStore` is the gateway to Redis: every other module reads and writes the
records through its named methods (the ledger of bills through :attr:`JobStore.billing`;
admission and the throttles keep their own keys). Every multi-key change is a Lua script
(``seedq/lua/``), so a crash or a concurrent submitter can never leave a job
half-registered or counted twice. The values it hands out are in :mod:`seedq.records`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis

from seedq import keys, scripts
from seedq.billing import Billing
from seedq.contract import TERMINAL_STATES, JobState
from seedq.records import (
    COMPACT_DROP_FIELDS,
    PACKED_FIELDS,
    PACKED_PREFIX,
    STUCK_FAILURES,
    STUCK_RETRIES,
    Decision,
    Moved,
    RegisterResult,
    RunInfo,
    compacted,
    decoded,
    failure_fields,
    new_run_id,
    stored_spec,
    unpacked,
)
from seedq.runstore import RunRecords

__all__ = [
    "COMPACT_DROP_FIELDS",
    "REGISTER_BATCH",
    "STUCK_FAILURES",
    "STUCK_RETRIES",
    "Decision",
    "JobStore",
    "Moved",
    "RegisterResult",
    "RunInfo",
    "decoded",
    "new_run_id",
]

REGISTER_BATCH = 500
READ_BATCH = 500  # job records per round trip when a whole run is read
# The fields of a job hash naming a generation it claimed (its ``seedq:gen`` keys).
GENERATION_FIELDS = ("generation_id", "stuck_generation_id", "retry_of")
# register.lua finds a pending job's queue in its owner's run, read inside the script.
RUN_PLACEHOLDER = "{run}"


def _text(value: str | int | float) -> str:
    """A value as redis-py would send it (numbers by ``repr``), for a script's JSON."""
    return value if isinstance(value, str) else repr(value)


class JobStore(RunRecords):
    """Runs and jobs; the Redis client is passed in (real Redis or fakeredis). The
    runs' half is :class:`seedq.runstore.RunRecords`.

    ``redis`` stays public only for the gateways that keep their own keys
    (``seedq.admission``, ``worker.throttle``, the time step); nothing else uses it.
    ``redact`` cleans the error texts a move or an update stores
    (:data:`seedq.runstore.REDACTED_FIELDS`)."""

    def __init__(self, client: redis.Redis, redact: Callable[[str], str] | None = None) -> None:
        super().__init__(client, redact)
        self.billing = Billing(client)
        self._register = scripts.register(client, "register")
        self._transition = scripts.register(client, "transition")
        self._unlock = scripts.register(client, "unlock")
        self._prune_job = scripts.register(client, "prune_job")
        self._compact_job = scripts.register(client, "compact_job")

    # -- registration ------------------------------------------------------------------

    def register(
        self,
        run_id: str,
        jobs: Iterable[tuple[str, str, dict[str, Any]]],
        *,
        force: bool = False,
        run_priority: int = 0,
    ) -> Iterator[RegisterResult]:
        """Register ``(job_id, fingerprint, record)`` triples in batches; yields per batch."""
        batch: list[tuple[str, str, dict[str, Any]]] = []
        for job in jobs:
            batch.append(job)
            if len(batch) >= REGISTER_BATCH:
                yield self._register_batch(run_id, batch, force, run_priority)
                batch = []
        if batch:
            yield self._register_batch(run_id, batch, force, run_priority)

    def _register_batch(
        self,
        run_id: str,
        batch: list[tuple[str, str, dict[str, Any]]],
        force: bool,
        run_priority: int,
    ) -> RegisterResult:
        job_args: list[str | int | float] = []
        for job_id, fingerprint, record in batch:
            job_args += [
                job_id,
                fingerprint,
                stored_spec(record),
                int(record.get("priority", 0)),
                float(record.get("est_cost", 0.0)),
            ]
        answers = self._register(
            keys=[
                keys.run_jobs(run_id),
                keys.run_counts(run_id),
                keys.run_waiting(run_id),
                keys.ADMISSION_RUNS,
                keys.IN_FLIGHT,
                keys.SEQUENCE,
                keys.run(run_id),
                *(keys.job(job_id) for job_id, _fp, _rec in batch),
            ],
            args=[
                run_id,
                str(time.time()),
                "1" if force else "0",
                run_priority,
                keys.run_waiting(RUN_PLACEHOLDER),
                *job_args,
            ],
        )
        result = RegisterResult()
        for (job_id, _fp, _rec), raw in zip(batch, answers, strict=True):
            decision = Decision(decoded(raw))
            result.counts[decision] += 1
            if decision in (Decision.NEW, Decision.PENDING):
                result.to_enqueue.append(job_id)
            elif decision is Decision.CHANGED:
                result.changed.append(job_id)
        return result

    # -- jobs --------------------------------------------------------------------------

    def move(
        self,
        job_id: str,
        run_id: str,
        to: JobState,
        *,
        expect: Iterable[JobState],
        **fields: str | int | float,
    ) -> Moved:
        """Compare-and-set a job's state (``seedq/lua/transition.lua``), setting
        ``fields`` with it.

        ``reserve_more`` and ``count`` are not stored but act on the job's reservation
        and the run's tallies in the same step (see the script)."""
        return self._move(job_id, run_id, to, expect, {}, fields)

    def move_when(
        self,
        job_id: str,
        run_id: str,
        to: JobState,
        *,
        expect: Iterable[JobState],
        when: Mapping[str, str],
        **fields: str | int | float,
    ) -> Moved:
        """:meth:`move`, only if the job's fields ``when`` hold these values too (an
        absent field reads as ``""``; verdict ``changed`` otherwise): e.g. the
        generation a step judged, which another worker may have replaced meanwhile."""
        return self._move(job_id, run_id, to, expect, when, fields)

    def _move(
        self,
        job_id: str,
        run_id: str,
        to: JobState,
        expect: Iterable[JobState],
        when: Mapping[str, str],
        fields: Mapping[str, str | int | float],
    ) -> Moved:
        args = {
            "run_id": run_id,
            "job_id": job_id,
            "to": str(to),
            "now": _text(time.time()),
            "expect": [str(s) for s in expect],
            "when": [[name, value] for name, value in when.items()],
            "set": [[name, _text(value)] for name, value in self._redacted(fields).items()],
            "retry_fields": failure_fields(),
        }
        verdict, before = self._transition(
            keys=[
                keys.job(job_id),
                keys.run_counts(run_id),
                keys.IN_FLIGHT,
                keys.run_in_flight(run_id),
                keys.run_budget(run_id),
                keys.DELIVERING,
                keys.UNBILLED,
                keys.run_billing(run_id),
                keys.run(run_id),
            ],
            # Raw UTF-8 rather than \u escapes: the values arrive as redis-py sent them.
            args=[json.dumps(args, ensure_ascii=False)],
        )
        return Moved(decoded(verdict) == "ok", decoded(verdict), decoded(before))

    def job(self, job_id: str) -> dict[str, str]:
        """The job's record, as text (``{}`` for none); compacted, unpacked
        (:func:`seedq.records.unpacked`)."""
        return unpacked(self.redis.hgetall(keys.job(job_id)))

    def jobs(self, job_ids: Sequence[str]) -> list[dict[str, str]]:
        """Each job's record (``{}`` for none), in one round trip."""
        return [unpacked(raw) for raw in self._hashes(job_ids)]

    def _hashes(self, job_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        """Each job's hash as stored, in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.job(job_id))
            return pipe.execute()

    def run_jobs(self, run_id: str) -> Iterator[tuple[str, dict[str, str]]]:
        """The run's jobs and their records, ``READ_BATCH`` per round trip."""
        ids = self.run_job_ids(run_id)
        for start in range(0, len(ids), READ_BATCH):
            chunk = ids[start : start + READ_BATCH]
            yield from zip(chunk, self.jobs(chunk), strict=True)

    def job_fields(self, job_ids: Sequence[str], names: Sequence[str]) -> list[list[str]]:
        """These fields of each job (``""`` where absent), in one round trip; a second
        for the compacted jobs among them when a field asked for may be packed."""
        packable = bool(set(names) & set(PACKED_FIELDS))
        asked = [*names, f"{PACKED_PREFIX}0"] if packable else list(names)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(keys.job(job_id), *asked)
            rows = pipe.execute()
        packed = [j for j, row in zip(job_ids, rows, strict=True) if packable and row[-1]]
        records = dict(zip(packed, self.jobs(packed), strict=True))
        return [
            [records[j].get(n, "") for n in names]
            if j in records
            else [decoded(v) for v in row[: len(names)]]
            for j, row in zip(job_ids, rows, strict=True)
        ]

    def job_state(self, job_id: str) -> JobState | None:
        raw = self.redis.hget(keys.job(job_id), "state")
        return JobState(decoded(raw)) if raw else None

    def update_job(self, job_id: str, **fields: str | int | float) -> None:
        """Set fields that are not part of the state machine (timings, counters)."""
        self.redis.hset(keys.job(job_id), mapping=self._redacted(fields))  # type: ignore[arg-type]

    def clear_job_fields(self, job_id: str, *names: str) -> None:
        """Remove fields that are not part of the state machine."""
        if names:
            self.redis.hdel(keys.job(job_id), *names)

    def count_calls(self, job_id: str, calls: int) -> None:
        if calls:
            self.redis.hincrby(keys.job(job_id), "provider_calls", calls)

    def count_failure(self, job_id: str, step: str, now: float) -> tuple[int, float]:
        """One more failed attempt of the job's step: (attempts so far, when the first of
        them failed). The move that ends the step clears them (transition.lua)."""
        attempts_field, first_field = failure_fields(step)
        key = keys.job(job_id)
        with self.redis.pipeline() as pipe:
            pipe.hincrby(key, attempts_field, 1)
            pipe.hsetnx(key, first_field, now)
            pipe.hget(key, first_field)
            attempts, _set, first = pipe.execute()
        return int(attempts), float(first or now)

    def clear_failures(self, job_id: str, *steps: str) -> None:
        """Forget the failed attempts of these steps (every step when none named)."""
        self.clear_job_fields(job_id, *failure_fields(*steps))

    # -- generations -------------------------------------------------------------------

    def claim_generation(self, generation_id: str, job_id: str) -> bool:
        """Link a generation to a job unless another job owns it already."""
        if self.redis.set(keys.generation(generation_id), job_id, nx=True):
            return True
        return self.job_for_generation(generation_id) == job_id

    def job_for_generation(self, generation_id: str) -> str | None:
        raw = self.redis.get(keys.generation(generation_id))
        return decoded(raw) if raw else None

    def generation_owners(self, generation_ids: Sequence[str]) -> dict[str, str]:
        """Generation id → the job its ``seedq:gen`` key names, for those that have one;
        in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for gid in generation_ids:
                pipe.get(keys.generation(gid))
            values = pipe.execute()
        return {gid: decoded(v) for gid, v in zip(generation_ids, values, strict=True) if v}

    # -- the tick ----------------------------------------------------------------------

    def take_tick_lock(self, token: str, ttl_ms: int) -> bool:
        """Hold the tick lock for ``ttl_ms`` unless another worker holds it."""
        return bool(self.redis.set(keys.TICK_LOCK, token, nx=True, px=ttl_ms))

    def release_tick_lock(self, token: str) -> None:
        """Release the tick lock if this token still holds it (it may have expired)."""
        self._unlock(keys=[keys.TICK_LOCK], args=[token])

    def next_sweep_at(self) -> float:
        """When the provider sweep is due, in server seconds; 0.0 if never noted."""
        return float(self.redis.get(keys.NEXT_SWEEP) or 0)

    def set_next_sweep(self, at: float) -> None:
        """Note when the next sweep is due. Read and set apart: only the tick-lock
        holder calls it."""
        self.redis.set(keys.NEXT_SWEEP, at)

    # -- retention (worker.retention) --------------------------------------------------

    def retention_due(self, now: float, interval_s: float) -> bool:
        """Whether a retention pass is due, noting it done now if so (tick-lock holder)."""
        last = float(self.redis.get(keys.LAST_RETENTION) or 0)
        if now - last < interval_s:
            return False
        self.redis.set(keys.LAST_RETENTION, now)
        return True

    def prune_jobs(self, run_id: str, job_ids: Sequence[str]) -> dict[str, str]:
        """Delete these jobs of a pruned run with their generation-ownership keys, each
        checked and deleted atomically (``seedq/lua/prune_job.lua``); job id -> verdict
        (``pruned``, ``gone``, ``foreign``, ``busy``). Two round trips."""
        rows = self.job_fields(job_ids, GENERATION_FIELDS)
        terminal = sorted(str(s) for s in TERMINAL_STATES)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, gens in zip(job_ids, rows, strict=True):
                self._prune_job(
                    keys=[
                        keys.job(job_id),
                        keys.IN_FLIGHT,
                        keys.DELIVERING,
                        keys.UNBILLED,
                        *(keys.generation(g) for g in dict.fromkeys(gens) if g),
                    ],
                    args=[run_id, job_id, *terminal],
                    client=pipe,
                )
            verdicts = pipe.execute()
        return {job_id: decoded(v) for job_id, v in zip(job_ids, verdicts, strict=True)}

    def compact_jobs(self, run_id: str, job_ids: Sequence[str]) -> int:
        """Rewrite the delivered, billed jobs among these as
        :func:`seedq.records.compacted` stores them, each only if its hash is still the
        one read (``seedq/lua/compact_job.lua``); how many were rewritten. Two round
        trips; a job compacted already is left as it is."""
        delivered = str(JobState.DELIVERED)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, raw in zip(job_ids, self._hashes(job_ids), strict=True):
                record = unpacked(raw)
                if record.get("run_id") != run_id or record.get("state") != delivered:
                    continue
                new = _as_stored(compacted(record))
                if new == raw:
                    continue
                self._compact_job(
                    keys=[keys.job(job_id), keys.UNBILLED],
                    args=[job_id, len(raw), *_flat(raw), *_flat(new)],
                    client=pipe,
                )
            done = pipe.execute()
        return sum(int(n) for n in done)


def _as_stored(fields: Mapping[str, str | bytes]) -> dict[bytes, bytes]:
    """Fields as redis-py answers them, to compare with a hash read."""
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def _flat(fields: Mapping[bytes, bytes]) -> list[bytes]:
    return [part for pair in fields.items() for part in pair]
