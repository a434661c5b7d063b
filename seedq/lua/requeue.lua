-- Gives an admitted job's slot back and puts it at the head of its priority in its
-- run's queue (its reservation against the budget is returned too).
-- KEYS: in-flight zset, run's in-flight set, run's waiting zset, admission runs zset,
--   run's budget hash, job hash, run hash.
-- ARGV: job id, run id, waiting score (seedq.admission.waiting_score).
local inflight, run_inflight, waiting, runs, budget, job_key, run_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local job_id, run_id, score = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('ZREM', inflight, job_id) == 0 then return 0 end
redis.call('SREM', run_inflight, job_id)
redis.call('ZADD', waiting, score, job_id)
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
