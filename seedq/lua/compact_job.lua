-- Rewrites a delivered job's hash without what only the pipeline needed (seedq.store,
-- JobStore.compact_jobs), once its run's report is archived. Rewritten, not HDEL'd:
-- Redis never shrinks a hash's encoding back, so only a fresh hash frees the memory.
-- KEYS: job hash, unbilled zset.
-- ARGV: run_id, job_id, the delivered state, the spec as read, the compact spec, then
--   the names of the fields to drop.
-- Returns 1 when rewritten; 0 when the job is not this run's, not delivered, still
-- waiting for its bill (the biller reads the dropped fields), or its spec changed
-- since it was read (registered again meanwhile).
local job_key, unbilled = KEYS[1], KEYS[2]
local run_id, job_id, delivered, old_spec, new_spec = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HGET', job_key, 'run_id') ~= run_id then return 0 end
if redis.call('HGET', job_key, 'state') ~= delivered then return 0 end
if redis.call('ZSCORE', unbilled, job_id) then return 0 end
if redis.call('HGET', job_key, 'spec') ~= old_spec then return 0 end
local drop = {}
for i = 6, #ARGV do drop[ARGV[i]] = true end
local flat = redis.call('HGETALL', job_key)
local keep = {}
for i = 1, #flat, 2 do
  local name = flat[i]
  if not drop[name] then
    keep[#keep + 1] = name
    if name == 'spec' then keep[#keep + 1] = new_spec else keep[#keep + 1] = flat[i + 1] end
  end
end
redis.call('DEL', job_key)
redis.call('HSET', job_key, unpack(keep))
return 1
