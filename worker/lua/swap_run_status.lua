-- Moves a run to a new status and reason only if it still has the status and reason
-- read (a compare-and-set), so an operator's pause or cancel made meanwhile stands.
-- KEYS: the run hash. ARGV: expected status, expected reason, status, reason, paused_by.
local status = redis.call('HGET', KEYS[1], 'status') or ''
local reason = redis.call('HGET', KEYS[1], 'reason') or ''
if status ~= ARGV[1] or reason ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'reason', ARGV[4], 'paused_by', ARGV[5])
return 1
