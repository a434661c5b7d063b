-- Rewrites a delivered job's hash in its compacted form (seedq.store,
-- JobStore.compact_jobs; seedq.records.compacted), once its run's report is archived.
-- Rewritten, not HDEL'd: Redis never shrinks a hash's encoding back, so only a fresh
-- hash frees the memory, and only a fresh one gets the compact listpack encoding back.
-- KEYS: job hash, unbilled zset.
-- ARGV: job_id, n, then the hash as it was read (n name/value pairs), then the hash to
--   write (name/value pairs).
-- Returns 1 when rewritten; 0 when the job waits for its bill (the biller reads the
-- dropped fields) or its hash is no longer the one read: moved, billed or registered
-- again meanwhile, whose new fields the rewrite would lose.
local job_key, unbilled = KEYS[1], KEYS[2]
local job_id, n = ARGV[1], tonumber(ARGV[2])
if redis.call('ZSCORE', unbilled, job_id) then return 0 end
if redis.call('HLEN', job_key) ~= n then return 0 end
for i = 3, 2 * n + 1, 2 do
  if redis.call('HGET', job_key, ARGV[i]) ~= ARGV[i + 1] then return 0 end
end
redis.call('DEL', job_key)
redis.call('HSET', job_key, unpack(ARGV, 2 * n + 3))
return 1
