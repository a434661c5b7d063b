-- Stops looking for a job's bill: it stays `unknown`, counted as such in the run's
-- billing (seedq.billing, Billing.give_up).
-- KEYS: job hash, run billing, unbilled zset. ARGV: job_id, run_id.
-- Returns 1 when marked, 0 when there was nothing to do.
local job, billing, unbilled = KEYS[1], KEYS[2], KEYS[3]
redis.call('ZREM', unbilled, ARGV[1])
if redis.call('HGET', job, 'run_id') ~= ARGV[2] or redis.call('HEXISTS', job, 'billed_cost') == 1
   or redis.call('HGET', job, 'billed_status') == 'unknown' then
  return 0
end
redis.call('HSET', job, 'billed_status', 'unknown')
redis.call('HINCRBY', billing, 'unknown_jobs', 1)
return 1
