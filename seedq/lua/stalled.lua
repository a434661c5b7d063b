-- Deliveries: scores are when each was last heard of, not expiries (the job store, which
-- starts them, knows no lease). Returns those not heard of for ARGV[1] seconds.
-- KEYS: the delivery zset. ARGV: lease seconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
