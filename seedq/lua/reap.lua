-- A worker process whose heartbeat has lapsed is dead: the messages it held ("eta|job")
-- are handed to the caller, to be sent again, and forgotten, all in one step, so that no
-- two reapers both get them. Nothing happens if its heartbeat is back (it was only late).
-- KEYS: the heartbeat, the set of workers, the held hash. ARGV: worker id.
-- Returns {0} when alive, else {1, held...}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local held = redis.call('HVALS', KEYS[3])
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[2], ARGV[1])
table.insert(held, 1, 1)
return held
