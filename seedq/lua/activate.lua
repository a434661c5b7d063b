-- A run's `registering` -> `active`, only if nothing moved it meanwhile (paused,
-- cancelled). KEYS: run hash. Returns 1 when it moved.
if redis.call('HGET', KEYS[1], 'status') ~= 'registering' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'active')
return 1
