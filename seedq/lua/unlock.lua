-- Releases a lock only if this holder still has it (it may have expired and been taken
-- by another worker). KEYS: the lock. ARGV: the holder's token. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
