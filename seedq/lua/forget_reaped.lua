-- A reaped process's messages were sent again: forget them (only those: a process that
-- was only late may have received more since), and the process itself unless it beats
-- again or still holds some; then drop the claim.
-- KEYS: the heartbeat, the set of workers, the held hash, the reaping claim.
-- ARGV: worker id, task ids...
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[3], ARGV[i])
end
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
end
redis.call('DEL', KEYS[4])
return 1
