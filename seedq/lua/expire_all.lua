-- Every slot lease and delivery lease falls due now: their holders are known to be gone
-- (a private store whose only user was killed). Scores go to 0, which is both an expiry
-- long past and a "last heard of" long ago; members stay, so no slot is given away.
-- KEYS: the lease zsets.
local n = 0
for _, key in ipairs(KEYS) do
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    redis.call('ZADD', key, 'XX', 0, member)
    n = n + 1
  end
end
return n
