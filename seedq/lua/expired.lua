-- The members of a lease zset whose expiry (score, server time) has passed.
-- KEYS: the lease zset.
local t = redis.call('TIME')
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1e6)
