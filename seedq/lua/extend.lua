-- Sets the score of the members ARGV[2..] that are already in KEYS[1] to the server's
-- now + ARGV[1]: slot leases (expiry) and delivery leases (last heard of) alike. Scores
-- only ever grow (GT): a routine renewal must not cut short one that was extended for a
-- job waiting out a long countdown (worker.tasks.hold_leases).
-- KEYS: the lease zset. ARGV: seconds ahead, member...
local t = redis.call('TIME')
local score = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 'GT', score, ARGV[i])
end
return #ARGV - 1
