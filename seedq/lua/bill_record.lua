-- Records a job's bill (seedq.billing, Billing.record): the job's billed cost, the
-- run's budget moved from the estimate to the bill, the run's billing totals.
-- KEYS: job hash, run budget, run billing, unbilled zset. ARGV: job_id, run_id, amount, now.
-- Returns 1 when recorded, 0 when there was nothing to do (already billed, or the job was
-- registered again into another run meanwhile).
local job, budget, billing, unbilled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_id, run_id, amount = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('HGET', job, 'run_id') ~= run_id or redis.call('HEXISTS', job, 'billed_cost') == 1
then
  redis.call('ZREM', unbilled, job_id)
  return 0
end
local was_unknown = redis.call('HGET', job, 'billed_status') == 'unknown'
redis.call('HSET', job, 'billed_cost', ARGV[3], 'billed_status', 'billed', 'billed_at', ARGV[4])
-- The budget charged the estimate so far (transition.lua); the bill replaces it.
local charged = tonumber(redis.call('HGET', job, 'charged') or '0') or 0
if amount ~= charged then
  redis.call('HINCRBYFLOAT', budget, 'spent', amount - charged)
end
redis.call('HSET', job, 'charged', ARGV[3])
redis.call('HINCRBYFLOAT', billing, 'billed', amount)
redis.call('HINCRBY', billing, 'billed_jobs', 1)
if was_unknown then redis.call('HINCRBY', billing, 'unknown_jobs', -1) end
redis.call('ZREM', unbilled, job_id)
return 1
