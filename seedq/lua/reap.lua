-- Claim a worker process whose heartbeat has lapsed: it is dead, and the messages it
-- held (task id -> "eta|job") are handed to the caller to be sent again. They are not
-- forgotten here but once sent (forget_reaped.lua): a tick that dies between the two
-- leaves them held, and its claim lapses, so the next tick hands them out again. Nothing
-- happens if the heartbeat is back (it was only late), or another tick holds the claim.
-- KEYS: the heartbeat, the held hash, the reaping claim. ARGV: claim ms.
-- Returns {0} when alive or claimed, else {1, task id, value, task id, value, ...}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then
  return {0}
end
local held = redis.call('HGETALL', KEYS[2])
table.insert(held, 1, 1)
return held
