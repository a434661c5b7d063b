-- A run's `registering` -> `active`, only if nothing moved it meanwhile (paused,
-- cancelled). KEYS: run hash. ARGV: the registering status, the active status
-- (seedq.contract.RunStatus). Returns 1 when it moved.
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
return 1
