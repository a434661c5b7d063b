"""Admission: which waiting jobs may start now, under one global in-flight cap.

Every registered job waits in its run's queue (``keys.run_waiting``: priority, then
first in, first out). A job is *admitted* when it takes a slot of the global in-flight
set (``keys.IN_FLIGHT``) and only then gets a broker message, so a run of 100,000 jobs
costs 100,000 small Redis entries and at most ``max_in_flight`` messages, not 100,000
messages retried in a loop. The slot is held from before the enqueue until the
generation ends at the provider (``generated``, ``failed``, ``cancelled``), released in
the same Lua script that moves the job (``seedq.store._TRANSITION``), so the number of
generations queued or processing at the provider never exceeds the cap.

Slots are leases: each carries an expiry (server time) renewed while the job is seen
alive. An expired lease means nobody has heard of the job for ``lease_s``: its worker
died, or a message was lost. The job is then re-driven (its step message sent again,
which is safe, every step being a compare-and-set); its slot is not given away, since
its generation may still be running at the provider. A generated job holds no slot, but
its delivery is leased the same way (``keys.DELIVERING``, last heard of), so a worker
killed mid-delivery does not leave it generated.

Between runs: the highest run priority first; among runs of equal priority, the run
with the fewest jobs in flight gets the next slot (equal shares), so an urgent run
started beside a nightly one gets capacity as soon as slots free up: all of it with a
higher ``--priority``, half of it at the same priority.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from seedq import keys
from seedq.settings import Settings
from seedq.store import decoded

# Picks up to min(free slots, max_batch) jobs; returns {run, job, run, job, ...}.
# Run hashes and queues are reached by name from the prefix (one Redis, not a cluster).
_ADMIT = """
local runs_key, inflight = KEYS[1], KEYS[2]
local cap, lease, max_batch = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local run_prefix, job_prefix = ARGV[4], ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local out = {}
local free = cap - redis.call('ZCARD', inflight)
if free <= 0 then return out end
local limit = math.min(free, max_batch)
local runs = redis.call('ZREVRANGE', runs_key, 0, -1, 'WITHSCORES')
local blocked = {}
while #out < 2 * limit do
  local best, best_prio, best_load = nil, nil, nil
  for i = 1, #runs, 2 do
    local run, prio = runs[i], tonumber(runs[i + 1])
    if best_prio and prio < best_prio then break end
    local waiting = run_prefix .. run .. ':waiting'
    if not blocked[run] then
      local status = redis.call('HGET', run_prefix .. run, 'status')
      if redis.call('ZCARD', waiting) == 0 then
        redis.call('ZREM', runs_key, run)
        blocked[run] = true
      elseif status ~= 'active' and status ~= 'registering' then
        blocked[run] = true
      else
        local load = redis.call('SCARD', run_prefix .. run .. ':inflight')
        if not best or load < best_load then best, best_prio, best_load = run, prio, load end
      end
    end
  end
  if not best then break end
  local waiting = run_prefix .. best .. ':waiting'
  local job = redis.call('ZRANGE', waiting, 0, 0)[1]
  local job_key = job_prefix .. job
  local budget = run_prefix .. best .. ':budget'
  local est = tonumber(redis.call('HGET', job_key, 'est_cost') or '0') or 0
  local limit_amount = tonumber(redis.call('HGET', budget, 'cap') or '')
  local committed = (tonumber(redis.call('HGET', budget, 'reserved') or '0') or 0)
                  + (tonumber(redis.call('HGET', budget, 'spent') or '0') or 0)
  if limit_amount and committed + est > limit_amount + 1e-9 then
    redis.call('HSET', run_prefix .. best, 'status', 'paused', 'reason',
      string.format('budget: %.2f committed of %.2f; the next job would cost %.2f',
                    committed, limit_amount, est))
    blocked[best] = true
  else
    redis.call('ZREM', waiting, job)
    redis.call('ZADD', inflight, now + lease, job)
    redis.call('SADD', run_prefix .. best .. ':inflight', job)
    if est > 0 then
      redis.call('HINCRBYFLOAT', budget, 'reserved', est)
      redis.call('HSET', job_key, 'reserved_cost', est)
    end
    redis.call('HSET', job_key, 'admitted_at', now)
    out[#out + 1] = best
    out[#out + 1] = job
  end
end
return out
"""

# Sets the score of the members ARGV[2..] that are already in KEYS[1] to the server's
# now + ARGV[1]: slot leases (expiry) and delivery leases (last heard of) alike. Scores
# only ever grow (GT): a routine renewal must not cut short one that was extended for a
# job waiting out a long countdown (worker.tasks.hold_leases).
_EXTEND = """
local t = redis.call('TIME')
local score = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 'GT', score, ARGV[i])
end
return #ARGV - 1
"""

_EXPIRED = """
local t = redis.call('TIME')
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1e6)
"""

# Deliveries: scores are when each was last heard of, not expiries (the job store, which
# starts them, knows no lease).
_STALLED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
"""

# Every slot lease and delivery lease falls due now: their holders are known to be gone
# (a private store whose only user was killed). Scores go to 0, which is both an expiry
# long past and a "last heard of" long ago; members stay, so no slot is given away.
_EXPIRE_ALL = """
local n = 0
for _, key in ipairs(KEYS) do
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    redis.call('ZADD', key, 'XX', 0, member)
    n = n + 1
  end
end
return n
"""

# Gives an admitted job's slot back and puts it at the head of its priority in its
# run's queue (its reservation against the budget is returned too).
_REQUEUE = """
local inflight, run_inflight, waiting, runs, budget, job_key, run_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local job_id, run_id, prio = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('ZREM', inflight, job_id) == 0 then return 0 end
redis.call('SREM', run_inflight, job_id)
redis.call('ZADD', waiting, (1000 - prio) * 1e9, job_id)
-- The run may have left the admission set when its queue emptied: back at its own
-- priority (recorded at registration), not the lowest.
local run_prio = tonumber(redis.call('HGET', run_key, 'priority') or '0') or 0
redis.call('ZADD', runs, 'NX', run_prio, run_id)
local reserved = tonumber(redis.call('HGET', job_key, 'reserved_cost') or '0') or 0
if reserved > 0 then
  redis.call('HINCRBYFLOAT', budget, 'reserved', -reserved)
  redis.call('HSET', job_key, 'reserved_cost', 0)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Admitted:
    run_id: str
    job_id: str


class Admission:
    """The in-flight cap and the waiting queues; every decision is one Lua call."""

    def __init__(self, client: redis.Redis, *, max_in_flight: int, lease_s: float) -> None:
        self.redis = client
        self.max_in_flight = max_in_flight
        self.lease_s = lease_s
        self._admit = client.register_script(_ADMIT)
        self._extend = client.register_script(_EXTEND)
        self._expired = client.register_script(_EXPIRED)
        self._requeue = client.register_script(_REQUEUE)
        self._stalled = client.register_script(_STALLED)
        self._expire_all = client.register_script(_EXPIRE_ALL)

    def admit(self, max_batch: int = 500) -> list[Admitted]:
        """Take free slots for the best waiting jobs; the caller sends their messages."""
        raw = self._admit(
            keys=[keys.ADMISSION_RUNS, keys.IN_FLIGHT],
            args=[self.max_in_flight, self.lease_s, max_batch, keys.run(""), keys.job("")],
        )
        flat = [decoded(v) for v in raw]
        return [Admitted(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def renew(self, job_ids: Iterable[str], ahead_s: float = 0.0) -> None:
        """Extend these jobs' slot leases to a full lease from now, plus ``ahead_s`` (a
        job waiting out a countdown is not dead); jobs holding no slot are left out."""
        ids = list(job_ids)
        if ids:
            self._extend(keys=[keys.IN_FLIGHT], args=[self.lease_s + ahead_s, *ids])

    def expired(self) -> list[str]:
        return [decoded(v) for v in self._expired(keys=[keys.IN_FLIGHT])]

    def expire_all(self) -> int:
        """Make every slot and delivery lease due at once, for the next tick to re-drive.

        Only for a store whose every worker is known to be dead (the private store of a
        local run, whose lock the caller holds): anywhere else it would re-drive jobs
        that live workers are on (harmless, every step being a compare-and-set, but
        wasteful). Returns how many leases were cut short."""
        return int(self._expire_all(keys=[keys.IN_FLIGHT, keys.DELIVERING]))

    def in_flight(self) -> list[str]:
        return [decoded(v) for v in self.redis.zrange(keys.IN_FLIGHT, 0, -1)]

    def release(self, run_id: str, job_id: str) -> None:
        """Free a slot held by a job that has left the provider (cleanup after a crash)."""
        with self.redis.pipeline() as pipe:
            pipe.zrem(keys.IN_FLIGHT, job_id)
            pipe.srem(keys.run_in_flight(run_id), job_id)
            pipe.execute()

    def requeue(self, run_id: str, job_id: str, priority: int) -> bool:
        """Return a slot taken by a job that did not start (its run is paused)."""
        done = self._requeue(
            keys=[
                keys.IN_FLIGHT,
                keys.run_in_flight(run_id),
                keys.run_waiting(run_id),
                keys.ADMISSION_RUNS,
                keys.run_budget(run_id),
                keys.job(job_id),
                keys.run(run_id),
            ],
            args=[job_id, run_id, priority],
        )
        return bool(done)

    def stalled_deliveries(self) -> list[str]:
        """Generated jobs whose delivery nobody has touched for ``lease_s``."""
        return [decoded(v) for v in self._stalled(keys=[keys.DELIVERING], args=[self.lease_s])]

    def touch_deliveries(self, job_ids: Iterable[str], ahead_s: float = 0.0) -> None:
        """Renew the delivery leases of these jobs, as if heard of ``ahead_s`` from now
        (those not delivering are left out)."""
        ids = list(job_ids)
        if ids:
            self._extend(keys=[keys.DELIVERING], args=[ahead_s, *ids])

    def forget_delivery(self, job_id: str) -> None:
        """Drop a delivery lease left behind by a job that is no longer generated."""
        self.redis.zrem(keys.DELIVERING, job_id)

    def waiting(self, run_id: str) -> int:
        return int(self.redis.zcard(keys.run_waiting(run_id)))

    def set_budget(self, run_id: str, amount: float) -> None:
        self.redis.hset(keys.run_budget(run_id), "cap", amount)

    def budget(self, run_id: str) -> dict[str, float]:
        raw: dict[Any, Any] = self.redis.hgetall(keys.run_budget(run_id))
        return {decoded(k): float(v) for k, v in raw.items()}


def admission_for(client: redis.Redis, settings: Settings | None = None) -> Admission:
    """The admission of these settings (defaults when none are given)."""
    settings = settings or Settings()
    return Admission(client, max_in_flight=settings.max_in_flight, lease_s=settings.lease_s)
