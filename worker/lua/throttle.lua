-- The limiter of worker/throttle.py (see its docstring): one call decides or reports.
-- KEYS: limiter hash, provider backoff string.
-- ARGV: op, now_us ('' = server TIME), configured rate/s, burst, failure threshold,
--   cooldown_us, ttl_ms, rate floor/s, rate step/s, retry_after_us, granted_us, probe_poll_us,
--   max_reserve_us (reserve: the longest wait for which a turn ahead is taken).
-- Hash fields: tat (us), rate (effective, /s), fails (consecutive), breaker
--   (closed|open|half_open), until (us: end of the cooldown, or of the probe's lease),
--   cut (us of the last multiplicative decrease).
-- acquire, reserve -> {granted 0/1, wait_us, now_us, reason}; reports -> {};
-- state -> a flat list; held -> {backoff_remaining_us}.
local h, bkey = KEYS[1], KEYS[2]
local op = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local conf, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local threshold, cooldown = tonumber(ARGV[5]), tonumber(ARGV[6])
local f = redis.call('HMGET', h, 'tat', 'rate', 'fails', 'breaker', 'until', 'cut')
local tat = tonumber(f[1]) or now
local rate = math.min(tonumber(f[2]) or conf, conf)
local fails = tonumber(f[3]) or 0
local breaker = f[4] or 'closed'
local till = tonumber(f[5]) or 0
local cut = tonumber(f[6]) or 0
local backoff = tonumber(redis.call('GET', bkey) or '')
local backoff_us = 0
if backoff then backoff_us = math.ceil(backoff * 1000000) end
local function us(x) return string.format('%.0f', x) end

if op == 'state' then
  if breaker == 'open' and now >= till then breaker = 'half_open' end
  return {string.format('%.17g', rate), us(fails), breaker, us(math.max(0, till - now)),
          us(math.max(0, backoff_us - now))}
end

if op == 'held' then
  local held = math.max(0, backoff_us - now)
  if breaker == 'open' and now < till then held = math.max(held, till - now) end
  return {us(held)}
end

if op == 'acquire' or op == 'reserve' then
  if backoff_us > now then return {0, us(backoff_us - now), us(now), 'backoff'} end
  local probe = false
  if breaker ~= 'closed' then
    if now < till then
      if breaker == 'open' then return {0, us(till - now), us(now), 'open'} end
      return {0, us(math.min(till - now, tonumber(ARGV[12]))), us(now), 'probe_pending'}
    end
    probe = true
  end
  -- T rounded up: the granted rate may be a hair below the configured one, never above.
  local T = math.ceil(1000000 / rate)
  local start = math.max(tat, now)
  local allow_at = start - (burst - 1) * T
  local wait = 0
  if now < allow_at then
    -- A reservation takes the next turn even if it is a little ahead, so callers queue
    -- in order instead of all waking at once and racing for it.
    if op ~= 'reserve' or allow_at - now > tonumber(ARGV[13]) then
      return {0, us(allow_at - now), us(now), 'rate'}
    end
    wait = allow_at - now
  end
  redis.call('HSET', h, 'tat', us(start + T))
  if probe then redis.call('HSET', h, 'breaker', 'half_open', 'until', us(now + cooldown)) end
  redis.call('PEXPIRE', h, ARGV[7])
  if probe then return {1, us(wait), us(now), 'probe'} end
  if wait > 0 then return {1, us(wait), us(now), 'reserved'} end
  return {1, '0', us(now), 'ok'}
end

if op == 'ok' then
  -- Divided by the rate (above 1/s): about one step per second of successes, however
  -- fast the calls go, like TCP's one segment per round trip.
  rate = math.min(conf, rate + tonumber(ARGV[9]) / math.max(1, rate))
  fails = 0
  if breaker == 'half_open' then breaker = 'closed' end
elseif op == 'rate_limited' then
  -- A 429 for a call granted before the last cut was sent at the old rate: the cut
  -- already answered it. Without this, one burst of 429s would crash the rate to the floor.
  local granted = tonumber(ARGV[11]) or now
  if granted >= cut then
    rate = math.max(tonumber(ARGV[8]), rate / 2)
    cut = now
  end
  -- The provider answered: it is up, so the breaker counts this as a success.
  fails = 0
  if breaker == 'half_open' then breaker = 'closed' end
  local wait = tonumber(ARGV[10])
  if wait > 0 and now + wait > backoff_us then
    redis.call('SET', bkey, string.format('%.6f', (now + wait) / 1000000),
               'PX', us(math.ceil(wait / 1000)))
  end
elseif op == 'failure' then
  fails = fails + 1
  if breaker == 'half_open' or (breaker == 'closed' and fails >= threshold) then
    breaker = 'open'
    till = now + cooldown
  end
end
redis.call('HSET', h, 'rate', string.format('%.17g', rate), 'fails', us(fails),
           'breaker', breaker, 'until', us(till), 'cut', us(cut))
redis.call('PEXPIRE', h, ARGV[7])
return {}
