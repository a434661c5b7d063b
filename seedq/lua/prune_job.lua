-- Deletes one job of a run being pruned (seedq.store, JobStore.prune_jobs), and the
-- generation-ownership keys that name it, unless the job is still of use.
-- KEYS: job hash, in-flight zset, delivering zset, unbilled zset, then the ownership
--   keys (seedq:gen:{id}) of the generations the job's hash named when it was read.
-- ARGV: run_id, job_id, then the terminal job states.
-- Returns:
--   "pruned"   deleted, with each ownership key that still names this job
--   "gone"     no record (pruned already): nothing to do
--   "foreign"  the record now belongs to another run (registered again): left alone
--   "busy"     not terminal, or holding a slot, a delivery lease or a pending bill: kept
-- Checked and deleted in one step: a job registered again into a newer run between the
-- read and the delete is never lost.
local job_key, inflight, delivering, unbilled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_id, job_id = ARGV[1], ARGV[2]
local owner = redis.call('HGET', job_key, 'run_id')
if not owner then return 'gone' end
if owner ~= run_id then return 'foreign' end
local state = redis.call('HGET', job_key, 'state')
local terminal = false
for i = 3, #ARGV do
  if ARGV[i] == state then terminal = true end
end
if not terminal then return 'busy' end
if redis.call('ZSCORE', inflight, job_id) or redis.call('ZSCORE', delivering, job_id)
    or redis.call('ZSCORE', unbilled, job_id) then
  return 'busy'
end
for i = 5, #KEYS do
  if redis.call('GET', KEYS[i]) == job_id then redis.call('DEL', KEYS[i]) end
end
redis.call('DEL', job_key)
return 'pruned'
