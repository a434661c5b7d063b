-- Picks up to min(free slots, max_batch) jobs; returns {verdict, run, job, run, job, ...}
-- with verdict 'ok', or 'stale' when what the caller read no longer holds (the jobs
-- listed before it were admitted all the same; the caller reads again).
--
-- The caller (seedq.admission.Admission.admit) reads the admission runs and the head of
-- each admitting run's queue, and passes every key it may touch; this script checks
-- that the runs and their order are unchanged and that each job it takes is its queue's
-- head still, so the choice is the one a script reading everything itself would make.
--
-- KEYS: admission runs zset, in-flight zset, then per run (in ARGV's order) its hash,
--   waiting zset, in-flight set and budget hash, then the job hashes of the heads read,
--   run after run.
-- ARGV: cap, lease seconds, max batch, the paused status, the budget pause reason's
--   format, the number of admitting statuses, those statuses, the number of runs, then
--   per run: id, priority (its score as read), number of heads read, those job ids.
local runs_key, inflight = KEYS[1], KEYS[2]
local cap, lease, max_batch = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local paused, budget_reason = ARGV[4], ARGV[5]
local a = 6
local admitting = {}
for i = 1, tonumber(ARGV[a]) do admitting[ARGV[a + i]] = true end
a = a + tonumber(ARGV[a]) + 1
local n_runs = tonumber(ARGV[a])
a = a + 1
local read = {}
local k = 3 + 4 * n_runs
for r = 1, n_runs do
  local base = 2 + 4 * (r - 1)
  local run = {id = ARGV[a], prio = tonumber(ARGV[a + 1]), key = KEYS[base + 1],
               waiting = KEYS[base + 2], inflight = KEYS[base + 3], budget = KEYS[base + 4],
               heads = {}, head_keys = {}, next = 1}
  local n_heads = tonumber(ARGV[a + 2])
  for h = 1, n_heads do
    run.heads[h] = ARGV[a + 2 + h]
    run.head_keys[h] = KEYS[k]
    k = k + 1
  end
  a = a + 3 + n_heads
  read[r] = run
end

local out = {'ok'}
local runs = redis.call('ZREVRANGE', runs_key, 0, -1, 'WITHSCORES')
if #runs ~= 2 * n_runs then out[1] = 'stale' return out end
for i = 1, #runs, 2 do
  local run = read[(i + 1) / 2]
  if runs[i] ~= run.id or tonumber(runs[i + 1]) ~= run.prio then out[1] = 'stale' return out end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local free = cap - redis.call('ZCARD', inflight)
if free <= 0 then return out end
local limit = math.min(free, max_batch)
local blocked = {}
while #out - 1 < 2 * limit do
  local best, best_load = nil, nil
  for _, run in ipairs(read) do
    if best and run.prio < best.prio then break end
    if not blocked[run.id] then
      local status = redis.call('HGET', run.key, 'status')
      if redis.call('ZCARD', run.waiting) == 0 then
        redis.call('ZREM', runs_key, run.id)
        blocked[run.id] = true
      elseif not admitting[status] then
        blocked[run.id] = true
      else
        local load = redis.call('SCARD', run.inflight)
        if not best or load < best_load then best, best_load = run, load end
      end
    end
  end
  if not best then break end
  local job = redis.call('ZRANGE', best.waiting, 0, 0)[1]
  if job ~= best.heads[best.next] then out[1] = 'stale' break end
  local job_key = best.head_keys[best.next]
  local est = tonumber(redis.call('HGET', job_key, 'est_cost') or '0') or 0
  local limit_amount = tonumber(redis.call('HGET', best.budget, 'cap') or '')
  local committed = (tonumber(redis.call('HGET', best.budget, 'reserved') or '0') or 0)
                  + (tonumber(redis.call('HGET', best.budget, 'spent') or '0') or 0)
  if limit_amount and committed + est > limit_amount + 1e-9 then
    -- The same fields seedq.store.JobStore.pause_run writes (a test checks).
    redis.call('HSET', best.key, 'status', paused, 'reason',
      string.format(budget_reason, committed, limit_amount, est))
    blocked[best.id] = true
  else
    best.next = best.next + 1
    redis.call('ZREM', best.waiting, job)
    redis.call('ZADD', inflight, now + lease, job)
    redis.call('SADD', best.inflight, job)
    if est > 0 then
      redis.call('HINCRBYFLOAT', best.budget, 'reserved', est)
      redis.call('HSET', job_key, 'reserved_cost', est)
    end
    redis.call('HSET', job_key, 'admitted_at', now)
    out[#out + 1] = best.id
    out[#out + 1] = job
  end
end
return out
