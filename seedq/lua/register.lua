-- Registers a batch of jobs into a run, atomically (seedq.store, JobStore.register):
-- one call per batch, not per job, so the producer does not pay a round of packing and
-- a script call for each of 100,000 rows. Returns each job's decision, in order:
--   "new"       first time seen, or failed/cancelled before (or --force): now registered here
--   "pending"   registered but not yet picked up: enqueue again (the submit step is
--               idempotent, so a second message for it is harmless)
--   "active"    a worker is already on it (maybe for another run): leave it alone
--   "done"      delivered already with the same parameters: skip
--   "changed"   delivered already, parameters differ (same explicit id): skip, warn
-- KEYS: run jobs, run counts, run waiting, admission runs, in-flight zset, sequence,
--   run hash, then each job's hash.
-- ARGV: run_id, now, force, run priority, waiting-key template, then for each job (in
--   the order of its hash in KEYS): job_id, fingerprint, spec, job priority, estimate.
-- The template (keys.run_waiting('{run}'), seedq.store.RUN_PLACEHOLDER) stands for the
-- one key not passed as a key: a pending job waits in its owner's queue, and the owner
-- is read here, in the same atomic step; reading it before the call could race with
-- another run registering it.
local run_jobs, run_counts, waiting, runs, inflight, seq, run_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local run_id, now, force, run_prio, waiting_template = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local FIXED_KEYS, FIXED_ARGS, PER_JOB = 7, 5, 5
local PLACEHOLDER = '{run}'

local function waiting_of(run)
  local at = string.find(waiting_template, PLACEHOLDER, 1, true)
  return string.sub(waiting_template, 1, at - 1) .. run
    .. string.sub(waiting_template, at + string.len(PLACEHOLDER))
end

local function register(job_key, job_id, fp, spec, prio, est)
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
    local owner_waiting = waiting
    if owner ~= run_id then owner_waiting = waiting_of(owner) end
    local holds = redis.call('ZSCORE', inflight, job_id)
    if not holds and not redis.call('ZSCORE', owner_waiting, job_id) then
      local score = (1000 - prio) * 1e9 + redis.call('INCR', seq)
      redis.call('ZADD', owner_waiting, score, job_id)
      if owner == run_id then
        redis.call('ZADD', runs, 'GT', tonumber(run_prio), owner)
        -- Kept for a requeue, which may bring the run back after admission dropped it.
        redis.call('HSET', run_key, 'priority', run_prio)
      else
        redis.call('ZADD', runs, 'NX', tonumber(run_prio), owner)
      end
    end
  end
  return decision
end

local decisions = {}
for i = 1, #KEYS - FIXED_KEYS do
  local at = FIXED_ARGS + (i - 1) * PER_JOB
  decisions[i] = register(KEYS[FIXED_KEYS + i], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3],
                          tonumber(ARGV[at + 4]), ARGV[at + 5])
end
return decisions
