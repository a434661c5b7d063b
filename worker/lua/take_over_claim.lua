-- Takes over a notification's claim left by a sender that died (worker.timekeeper,
-- RunWatch.claim) only if it still holds the value read: a compare-and-set, so of two
-- tickers taking it over at once one wins. Its lifetime is kept.
-- KEYS: the claim (keys.run_notified). ARGV: the value read, the new value.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
