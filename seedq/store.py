"""The job store: runs and jobs in Redis, the one source of truth for what is paid for.

Every multi-key change is a Lua script, so a crash or a concurrent submitter can never
leave a job half-registered or counted twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from seedq import keys
from seedq.contract import JobState, RunStatus

REGISTER_BATCH = 500
# Tallies in a run's hash, each counted by the move that makes it (``count=...``).
STUCK_RETRIES = "stuck_retries"  # jobs whose stuck generation was killed and retried
STUCK_FAILURES = "stuck_failures"  # jobs failed because the retry got stuck too

# Registers one job into a run, atomically. Returns the decision:
#   "new"       first time seen, or failed/cancelled before (or --force): now registered here
#   "pending"   registered but not yet picked up: enqueue again (the submit step is
#               idempotent, so a second message for it is harmless)
#   "active"    a worker is already on it (maybe for another run): leave it alone
#   "done"      delivered already with the same parameters: skip
#   "changed"   delivered already, parameters differ (same explicit id): skip, warn
_REGISTER = """
local job_key, run_jobs, run_counts, waiting, runs, inflight, seq =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local run_id, fp, spec, now, force, prefix, prio, run_prio, est =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]
local job_id = string.sub(job_key, string.len(prefix) + 1)
local state = redis.call('HGET', job_key, 'state')
local decision = 'new'
if state then
  local old_fp = redis.call('HGET', job_key, 'fingerprint')
  if state == 'registered' then
    decision = 'pending'
  elseif state == 'delivered' then
    if force ~= '1' then
      if old_fp == fp then decision = 'done' else decision = 'changed' end
    end
  elseif state ~= 'failed' and state ~= 'cancelled' then
    decision = 'active'
  end
end
if decision == 'new' then
  local old_run = redis.call('HGET', job_key, 'run_id')
  redis.call('DEL', job_key)
  redis.call('HSET', job_key, 'spec', spec, 'fingerprint', fp, 'state', 'registered',
             'run_id', run_id, 'created_at', now, 'updated_at', now, 'est_cost', est)
  if old_run ~= run_id then
    redis.call('RPUSH', run_jobs, job_id)
    redis.call('HINCRBY', run_counts, 'registered', 1)
  elseif state then
    -- Registered again into its own run (a resumed run, --force): its tally moves with
    -- it, or the run would read as ended while the job is sent again.
    redis.call('HINCRBY', run_counts, state, -1)
    redis.call('HINCRBY', run_counts, 'registered', 1)
  end
end
if decision == 'new' or decision == 'pending' then
  -- Waiting for capacity, unless it already holds a slot (admitted, message sent).
  -- A pending job waits in its own run's queue, whichever run registers it again.
  local owner = redis.call('HGET', job_key, 'run_id')
  local owner_waiting = ARGV[10] .. owner .. ARGV[11]
  local holds = redis.call('ZSCORE', inflight, job_id)
  if not holds and not redis.call('ZSCORE', owner_waiting, job_id) then
    local score = (1000 - prio) * 1e9 + redis.call('INCR', seq)
    redis.call('ZADD', owner_waiting, score, job_id)
    if owner == run_id then
      redis.call('ZADD', runs, 'GT', tonumber(run_prio), owner)
      -- Kept for a requeue, which may bring the run back after admission dropped it.
      redis.call('HSET', ARGV[10] .. owner, 'priority', run_prio)
    else
      redis.call('ZADD', runs, 'NX', tonumber(run_prio), owner)
    end
  end
end
return decision
"""


# Moves one job between states if, and only if, it is still in the run the caller
# works for and in one of the expected states: the compare-and-set that makes every
# step safe to repeat (a redelivered message finds the job already moved and stops).
# The run's counters, the job's in-flight slot, its delivery lease and the run's budget
# move with it.
# Two field names are not stored but act with the move (see JobStore.move):
#   reserve_more   grow the job's estimate and its reservation against the run's budget
#                  by this amount (a stuck generation's retry is one more generation)
#   count          add one to this field of the run's hash (a per-run tally)
# KEYS: job hash, run counts, in-flight zset, run in-flight set, run budget, delivering,
#   unbilled zset, run billing hash, run hash.
# ARGV: run_id, new state, now, job_id, n_from, from states..., n_when, when
#       name/value pairs (fields that must hold these values too; absent reads as ''),
#       field/value pairs.
# Returns {verdict, state before}.
_TRANSITION = """
local job_key, counts, inflight, run_inflight, budget, delivering, unbilled, billing, run_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local run_id, new, now, job_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local state = redis.call('HGET', job_key, 'state')
if not state then return {'missing', ''} end
if redis.call('HGET', job_key, 'run_id') ~= run_id then return {'stale', state} end
local n_from = tonumber(ARGV[5])
local allowed = false
for i = 6, 5 + n_from do
  if ARGV[i] == state then allowed = true end
end
if not allowed then return {'refused', state} end
local at = 6 + n_from
local n_when = tonumber(ARGV[at])
for i = at + 1, at + 2 * n_when, 2 do
  if (redis.call('HGET', job_key, ARGV[i]) or '') ~= ARGV[i + 1] then
    return {'changed', state}
  end
end
redis.call('HSET', job_key, 'state', new, 'updated_at', now)
for i = at + 1 + 2 * n_when, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if name == 'reserve_more' then
    local more = tonumber(value) or 0
    if more ~= 0 then
      redis.call('HINCRBYFLOAT', job_key, 'est_cost', more)
      redis.call('HINCRBYFLOAT', job_key, 'reserved_cost', more)
      redis.call('HINCRBYFLOAT', budget, 'reserved', more)
    end
  elseif name == 'count' then
    redis.call('HINCRBY', run_key, value, 1)
  else
    redis.call('HSET', job_key, name, value)
  end
end
if state ~= new then
  redis.call('HINCRBY', counts, state, -1)
  redis.call('HINCRBY', counts, new, 1)
end
-- A move forward means the step that made it succeeded: its retry counters start over.
if new == 'submitted' or new == 'generated' or new == 'delivered' then
  redis.call('HDEL', job_key, 'submit_attempts', 'submit_first_failure_at',
             'track_attempts', 'track_first_failure_at',
             'deliver_attempts', 'deliver_first_failure_at')
end
-- The generation has left the provider: its in-flight slot is free.
if new == 'generated' or new == 'failed' or new == 'cancelled' or new == 'delivered' then
  redis.call('ZREM', inflight, job_id)
  redis.call('SREM', run_inflight, job_id)
end
-- A generated job's delivery is leased apart from the cap: a worker killed while
-- delivering must not leave it generated until the broker redelivers (hours).
if new == 'generated' then
  local t = redis.call('TIME')
  redis.call('ZADD', delivering, tonumber(t[1]) + tonumber(t[2]) / 1e6, job_id)
else
  redis.call('ZREM', delivering, job_id)
end
-- Budget: an admitted job reserved its estimate; a generated one is paid (charged at
-- the estimate, corrected to the real cost on delivery); one that never generated is not.
local reserved = tonumber(redis.call('HGET', job_key, 'reserved_cost') or '0') or 0
if reserved > 0 and (new == 'generated' or new == 'failed' or new == 'cancelled') then
  redis.call('HINCRBYFLOAT', budget, 'reserved', -reserved)
  redis.call('HSET', job_key, 'reserved_cost', 0)
  if new == 'generated' then
    redis.call('HINCRBYFLOAT', budget, 'spent', reserved)
    redis.call('HSET', job_key, 'charged', reserved)
  end
end
-- Once the provider's bill is known (seedq.billing) it is the charge, never an estimate.
local billed = redis.call('HEXISTS', job_key, 'billed_cost') == 1
if new == 'delivered' and not billed then
  local charged = tonumber(redis.call('HGET', job_key, 'charged') or '0') or 0
  local cost = tonumber(redis.call('HGET', job_key, 'cost') or '0') or 0
  if cost ~= charged then
    redis.call('HINCRBYFLOAT', budget, 'spent', cost - charged)
    redis.call('HSET', job_key, 'charged', cost)
  end
end
-- A generation that succeeded was paid for, delivered or not: learn its bill (the tick,
-- worker.biller). Counted into the run's billing once, however often it is redelivered.
if new == 'delivered' or (new == 'failed' and state == 'generated') then
  if redis.call('HSETNX', job_key, 'billing_counted', 1) == 1 then
    local estimate = tonumber(redis.call('HGET', job_key, 'cost') or '')
    if new ~= 'delivered' or not estimate then
      estimate = tonumber(redis.call('HGET', job_key, 'charged') or '0') or 0
    end
    redis.call('HINCRBYFLOAT', billing, 'estimated', estimate)
    redis.call('HINCRBY', billing, 'paid_jobs', 1)
    local warnings = redis.call('HGET', job_key, 'warnings')
    if new == 'delivered' and warnings and warnings ~= '[]' then
      redis.call('HINCRBY', billing, 'warned', 1)
    end
    if not billed and not redis.call('HGET', job_key, 'billed_status') then
      redis.call('ZADD', unbilled, 'NX', now, job_id)
    end
  end
end
return {'ok', state}
"""


_ACTIVATE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'registering' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'active')
return 1
"""


@dataclass(frozen=True, slots=True)
class Moved:
    """Outcome of a transition: ``ok`` when it happened; ``before`` is the prior state."""

    ok: bool
    verdict: str
    before: str


class Decision(StrEnum):
    NEW = "new"
    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    CHANGED = "changed"


@dataclass(slots=True)
class RegisterResult:
    """How many jobs each decision got; ``to_enqueue`` are the ids to send tasks for."""

    counts: dict[Decision, int] = field(default_factory=lambda: {d: 0 for d in Decision})
    to_enqueue: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: str
    name: str
    created_at: float
    status: str
    total: int
    counts: dict[str, int]
    meta: dict[str, Any]
    reason: str = ""  # why the run is paused, for the operator
    # Jobs whose generation was killed and retried for being stuck, and those that then
    # failed for being stuck again (tallied by the moves themselves: ``count``).
    stuck_retries: int = 0
    stuck_failures: int = 0

    @property
    def shown_status(self) -> str:
        """The status for people: ``finished`` once an active run has no job left to end
        (the stored status stays ``active``, so ``seedq retry`` can re-drive it), with
        the reason when there is one."""
        status = self.status
        ended = sum(self.counts.get(s, 0) for s in ("delivered", "failed", "cancelled"))
        if status == "active" and self.total and ended >= self.total:
            status = "finished"
        return f"{status} ({self.reason})" if self.reason else status


def decoded(value: Any) -> str:
    """A value read from Redis as text (redis-py answers bytes unless told otherwise);
    a missing one (None) reads as ``""``."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def new_run_id() -> str:
    """Sortable by creation time, unique without coordination."""
    return time.strftime("r%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


class JobStore:
    """Runs and jobs; the Redis client is passed in (real Redis or fakeredis)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._register = client.register_script(_REGISTER)
        self._transition = client.register_script(_TRANSITION)
        self._activate = client.register_script(_ACTIVATE)

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
        mapping: dict[str, str | int | float] = {"status": status, **fields}
        self.redis.hset(keys.run(run_id), mapping=mapping)  # type: ignore[arg-type]

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
        now = str(time.time())
        prefix = keys.job("")
        waiting_parts = keys.run_waiting("\0").split("\0")
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, fingerprint, record in batch:
                self._register(
                    keys=[
                        keys.job(job_id),
                        keys.run_jobs(run_id),
                        keys.run_counts(run_id),
                        keys.run_waiting(run_id),
                        keys.ADMISSION_RUNS,
                        keys.IN_FLIGHT,
                        keys.SEQUENCE,
                    ],
                    args=[
                        run_id,
                        fingerprint,
                        json.dumps(record, sort_keys=True),
                        now,
                        "1" if force else "0",
                        prefix,
                        int(record.get("priority", 0)),
                        run_priority,
                        float(record.get("est_cost", 0.0)),
                        *waiting_parts,
                    ],
                    client=pipe,
                )
            answers = pipe.execute()
        result = RegisterResult()
        for (job_id, _fp, _rec), raw in zip(batch, answers, strict=True):
            decision = Decision(decoded(raw))
            result.counts[decision] += 1
            if decision in (Decision.NEW, Decision.PENDING):
                result.to_enqueue.append(job_id)
            elif decision is Decision.CHANGED:
                result.changed.append(job_id)
        return result

    def move(
        self,
        job_id: str,
        run_id: str,
        to: JobState,
        *,
        expect: Iterable[JobState],
        **fields: str | int | float,
    ) -> Moved:
        """Compare-and-set a job's state (see ``_TRANSITION``), setting ``fields`` with it.

        ``reserve_more`` and ``count`` are not stored but act on the job's reservation
        and the run's tallies in the same step (see ``_TRANSITION``)."""
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
        expected = [str(s) for s in expect]
        conditions = list(when.items())
        args: list[str | int | float] = [
            run_id,
            str(to),
            time.time(),
            job_id,
            len(expected),
            *expected,
            len(conditions),
            *(part for pair in conditions for part in pair),
        ]
        for name, value in fields.items():
            args += [name, value]
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
            args=args,
        )
        return Moved(decoded(verdict) == "ok", decoded(verdict), decoded(before))

    def update_job(self, job_id: str, **fields: str | int | float) -> None:
        """Set fields that are not part of the state machine (timings, counters)."""
        self.redis.hset(keys.job(job_id), mapping=fields)  # type: ignore[arg-type]

    def count_calls(self, job_id: str, calls: int) -> None:
        if calls:
            self.redis.hincrby(keys.job(job_id), "provider_calls", calls)

    def claim_generation(self, generation_id: str, job_id: str) -> bool:
        """Link a generation to a job unless another job owns it already."""
        if self.redis.set(keys.generation(generation_id), job_id, nx=True):
            return True
        return self.job_for_generation(generation_id) == job_id

    def job_for_generation(self, generation_id: str) -> str | None:
        raw = self.redis.get(keys.generation(generation_id))
        return decoded(raw) if raw else None

    def activate_run(self, run_id: str, **fields: str | int | float) -> bool:
        """``registering`` -> ``active`` (other fields set either way); False when the run
        was moved meanwhile (paused, cancelled) and keeps its status."""
        key = keys.run(run_id)
        if fields:
            self.redis.hset(key, mapping=fields)  # type: ignore[arg-type]
        return bool(self._activate(keys=[key]))

    def run_status(self, run_id: str) -> str | None:
        raw = self.redis.hget(keys.run(run_id), "status")
        return decoded(raw) if raw else None

    def pause_run(self, run_id: str, reason: str) -> None:
        """Stop admitting the run's jobs until resumed; the reason is for the operator."""
        # The admit script writes the same fields for a budget pause (seedq/lua/admit.lua).
        self.redis.hset(keys.run(run_id), mapping={"status": RunStatus.PAUSED, "reason": reason})

    def job(self, job_id: str) -> dict[str, str]:
        raw: dict[Any, Any] = self.redis.hgetall(keys.job(job_id))
        return {decoded(k): decoded(v) for k, v in raw.items()}

    def job_state(self, job_id: str) -> JobState | None:
        raw = self.redis.hget(keys.job(job_id), "state")
        return JobState(decoded(raw)) if raw else None

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
