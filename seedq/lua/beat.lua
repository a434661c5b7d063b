-- One beat of a worker process: its heartbeat set again for ARGV[2] ms, itself entered in
-- the set of workers, and the leases of the jobs whose messages it holds renewed, so a
-- step however slow on a live worker is never taken for a dead one's. Slot leases get a
-- full lease from now, delivery leases "heard of now"; both only ever grow (GT), and only
-- jobs already leased are touched (XX).
-- KEYS: the heartbeat, the set of workers, the held hash, the slot and delivery zsets.
-- ARGV: worker id, heartbeat ms, lease seconds.
-- Returns 1 when the heartbeat was still there, 0 when it had lapsed (the tick may have
-- re-driven what the process held meanwhile).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local was = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
local expiry = now + tonumber(ARGV[3])
for _, held in ipairs(redis.call('HVALS', KEYS[3])) do
  local job = string.match(held, '^[^|]*|(.*)$')
  if job then
    redis.call('ZADD', KEYS[4], 'XX', 'GT', expiry, job)
    redis.call('ZADD', KEYS[5], 'XX', 'GT', now, job)
  end
end
return was
