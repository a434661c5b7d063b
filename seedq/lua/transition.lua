-- Moves one job between states if, and only if, it is still in the run the caller
-- works for and in one of the expected states: the compare-and-set that makes every
-- step safe to repeat (a redelivered message finds the job already moved and stops).
-- The run's counters, the job's in-flight slot, its delivery lease and the run's budget
-- move with it (seedq.store, JobStore.move).
-- KEYS: job hash, run counts, in-flight zset, run in-flight set, run budget, delivering,
--   unbilled zset, run billing hash, run hash.
-- ARGV[1]: one JSON object (every value a string, as redis-py would send it):
--   run_id, job_id, to, now
--   expect        the states the job may be in
--   when          [name, value] pairs the job's fields must hold too (absent reads as '')
--   set           [name, value] pairs to set, in order; two names are not stored but act
--                 with the move:
--                   reserve_more  grow the job's estimate and its reservation against the
--                                 run's budget by this amount (a stuck generation's retry
--                                 is one more generation)
--                   count         add one to this field of the run's hash (a tally)
--   retry_fields  the step failure counters a move forward clears
-- Returns {verdict, state before}.
local job_key, counts, inflight, run_inflight, budget, delivering, unbilled, billing, run_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local args = cjson.decode(ARGV[1])
local run_id, new, now, job_id = args.run_id, args.to, args.now, args.job_id
local state = redis.call('HGET', job_key, 'state')
if not state then return {'missing', ''} end
if redis.call('HGET', job_key, 'run_id') ~= run_id then return {'stale', state} end
local allowed = false
for _, expected in ipairs(args.expect) do
  if expected == state then allowed = true end
end
if not allowed then return {'refused', state} end
for _, pair in ipairs(args.when) do
  if (redis.call('HGET', job_key, pair[1]) or '') ~= pair[2] then
    return {'changed', state}
  end
end
redis.call('HSET', job_key, 'state', new, 'updated_at', now)
for _, pair in ipairs(args.set) do
  local name, value = pair[1], pair[2]
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
if (new == 'submitted' or new == 'generated' or new == 'delivered') and #args.retry_fields > 0 then
  redis.call('HDEL', job_key, unpack(args.retry_fields))
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
