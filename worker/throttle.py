"""Global request throttling shared by every worker process on every machine.

One :class:`Throttle` per call family ("submit", "poll"); all its state lives in Redis
and every decision is one Lua script, timed by the Redis server's clock
(``redis.call('TIME')``), so workers with skewed clocks still share one budget.

Four mechanisms, checked in this order by :meth:`Throttle.acquire`:

1. **Provider backoff** (``keys.PROVIDER_BACKOFF``, shared by every limiter since the
   provider is one service): a 429's Retry-After reported by any worker holds every
   worker until it has passed.
2. **Circuit breaker**: ``failure_threshold`` consecutive FAILUREs open it for
   ``cooldown_s``; then one caller gets through as a probe (its lease also lasts
   ``cooldown_s``, so a probe whose worker died is replaced); the probe's OK closes it,
   its FAILURE opens it again. A 429 is an answer, so it counts as a success here.
3. **GCRA** (generic cell rate algorithm) at the *effective* rate: a theoretical arrival
   time (TAT) per limiter; a call is allowed when ``now >= TAT - (burst - 1) * T``, which
   bounds any window of ``w`` seconds to ``burst + w * rate`` grants.
4. **AIMD** sets the effective rate: it starts at the configured rate; a RATE_LIMITED
   halves it (floor :func:`rate_floor`), once for all the calls granted before the cut.
   Each OK adds ``configured / 20``, divided by the effective rate when that is above one
   call a second: about ``configured / 20`` per second of successes (a halving is won
   back in ~10 s) however fast calls go, up to the configured rate and no further. A
   provider limit below the configured rate is thus found and held, the rate swinging
   between half of it and it.

Times in Lua are integer microseconds (exact in a double until year 2255); a denied call
takes nothing, so ``acquire`` may be repeated freely.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import redis

from provider.errors import (
    EnqueueOutcomeUnknown,
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ResultWriteError,
    ServerError,
)
from seedq import keys
from worker.metrics import observe_call, observe_wait

IDLE_TTL_S = 3600  # a limiter untouched this long is forgotten: it restarts at full rate
MAX_BACKOFF_S = 3600.0  # a Retry-After beyond this is taken as this (absurd header guard)
PROBE_POLL_S = 1.0  # callers waiting on a half-open probe look again at least this often
AIMD_STEPS = 20  # additive increase: configured rate / AIMD_STEPS per second of OKs

# The provider is down or unreachable (for EnqueueOutcomeUnknown: the answer was lost).
_FAILURES = (
    ServerError,
    ProviderTimeout,
    ProviderConnectionError,
    MalformedResponse,
    EnqueueOutcomeUnknown,
)

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}

# KEYS: limiter hash, provider backoff string.
# ARGV: op, now_us ('' = server TIME), configured rate/s, burst, failure threshold,
#   cooldown_us, ttl_ms, rate floor/s, rate step/s, retry_after_us, granted_us, probe_poll_us,
#   max_reserve_us (reserve: the longest wait for which a turn ahead is taken).
# Hash fields: tat (us), rate (effective, /s), fails (consecutive), breaker
#   (closed|open|half_open), until (us: end of the cooldown, or of the probe's lease),
#   cut (us of the last multiplicative decrease).
# acquire, reserve -> {granted 0/1, wait_us, now_us, reason}; reports -> {};
# state -> a flat list; held -> {backoff_remaining_us}.
_SCRIPT = """
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
"""


class Outcome(StrEnum):
    """What a throttled provider call came to; the Lua script's report operations."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class Grant:
    """One decision. Granted: the call may go after ``wait_s`` (0 but for a reservation);
    not granted: nothing was taken, ask again after ``wait_s``. ``at_s``: server time."""

    granted: bool
    wait_s: float
    at_s: float
    reason: str  # ok | reserved | probe | backoff | open | probe_pending | rate


def parse_rate(spec: str) -> float:
    """Calls per second of a spec such as ``"2/s"``, ``"100/min"``, ``"3600/h"``, ``"5"``."""
    text = spec.strip().lower()
    count_text, slash, unit = text.partition("/")
    unit = unit.strip()
    if slash and unit not in _UNITS:
        raise ValueError(
            f"rate {spec!r}: unknown unit {unit!r}; use one of {', '.join(sorted(_UNITS))}"
        )
    try:
        count = float(count_text)
    except ValueError:
        raise ValueError(f"rate {spec!r}: {count_text.strip()!r} is not a number") from None
    if not math.isfinite(count) or count <= 0:
        raise ValueError(f"rate {spec!r}: the count must be a positive finite number")
    return count / (_UNITS[unit] if slash else 1.0)


def rate_floor(configured_per_s: float) -> float:
    """Lowest effective rate AIMD may reach: 1% of the configured rate, but no lower than
    one call a minute (unless the configured rate itself is lower)."""
    return min(configured_per_s, max(configured_per_s / 100.0, 1.0 / 60.0))


def outcome_for(error: BaseException | None) -> Outcome | None:
    """How a provider call's result should be reported; None: it says nothing about the
    provider (a local failure, a bug), so report nothing."""
    if error is None:
        return Outcome.OK
    if isinstance(error, RateLimited):
        return Outcome.RATE_LIMITED
    if isinstance(error, _FAILURES):
        return Outcome.FAILURE
    if isinstance(error, ResultWriteError):
        return None
    # Permanent and run-fatal errors are answers: the provider is up and within its limits.
    return Outcome.OK if isinstance(error, ProviderError) else None


class Throttle:
    """A global limiter named ``name``; ``clock`` (seconds) is a test hook replacing the
    Redis server's clock, never to be set in production."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        rate_per_s: float,
        burst: int = 1,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be positive and finite, not {rate_per_s!r}")
        if burst < 1 or failure_threshold < 1:
            raise ValueError("burst and failure_threshold must be at least 1")
        if not (math.isfinite(cooldown_s) and cooldown_s > 0):
            raise ValueError(f"cooldown_s must be positive and finite, not {cooldown_s!r}")
        self.name = name
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._keys = [keys.limiter(name), keys.PROVIDER_BACKOFF]
        self._script = client.register_script(_SCRIPT)
        # The grant time of this thread's last call, so its 429 can be told apart from
        # 429s of calls sent before the last rate cut.
        self._local = threading.local()

    @classmethod
    def from_spec(
        cls, client: redis.Redis, name: str, spec: str, burst: int = 1, **options: Any
    ) -> Throttle:
        """A throttle whose rate is a :func:`parse_rate` spec (the settings' form)."""
        return cls(client, name, parse_rate(spec), burst, **options)

    def acquire(self) -> float:
        """0.0: a call may go now (its slot is taken); else seconds to wait, nothing taken."""
        return self.try_acquire().wait_s

    def try_acquire(self) -> Grant:
        """:meth:`acquire` with the server time of the decision and its reason."""
        return self._decide("acquire")

    def reserve(self, max_wait_s: float) -> Grant:
        """Take the next turn if it comes within ``max_wait_s``: granted, the call goes
        after ``wait_s`` (the turn is this caller's; no one else is given it). Further
        off, or held by a backoff or the breaker: not granted, nothing taken."""
        return self._decide("reserve", max_reserve_us=math.floor(max_wait_s * 1e6))

    def held_s(self) -> float:
        """Seconds every call is still held: by a provider backoff (a 429's Retry-After)
        or by the open breaker."""
        (remaining_us,) = self._run("held")
        return int(remaining_us) / 1e6

    def _decide(self, op: str, *, max_reserve_us: int = 0) -> Grant:
        granted, wait_us, now_us, reason = self._run(op, max_reserve_us=max_reserve_us)
        if int(granted):
            # When the turn was decided, not when the call goes: a 429 of a turn reserved
            # before a rate cut was paced at the old rate, and the cut already answered it.
            self._local.granted_us = int(now_us)
        return Grant(bool(int(granted)), int(wait_us) / 1e6, int(now_us) / 1e6, _text(reason))

    def report(self, outcome: Outcome, *, retry_after_s: float | None = None) -> None:
        """Feed a call's outcome back; ``retry_after_s`` only counts with RATE_LIMITED."""
        wait_s = retry_after_s if outcome is Outcome.RATE_LIMITED and retry_after_s else 0.0
        wait_s = min(MAX_BACKOFF_S, wait_s) if wait_s > 0 else 0.0  # also drops NaN
        granted_us = getattr(self._local, "granted_us", None)
        self._local.granted_us = None
        self._run(
            outcome.value,
            retry_after_us=math.ceil(wait_s * 1e6),
            granted_us="" if granted_us is None else str(granted_us),
        )

    def state(self) -> dict[str, Any]:
        """Configured and effective rate, breaker and backoff, for displays and tests."""
        rate, fails, breaker, breaker_us, backoff_us = self._run("state")
        return {
            "name": self.name,
            "configured_rate_per_s": self.rate_per_s,
            "effective_rate_per_s": float(rate),
            "burst": self.burst,
            "breaker": _text(breaker),
            "breaker_remaining_s": int(breaker_us) / 1e6,
            "consecutive_failures": int(fails),
            "backoff_remaining_s": int(backoff_us) / 1e6,
        }

    def _run(
        self, op: str, *, retry_after_us: int = 0, granted_us: str = "", max_reserve_us: int = 0
    ) -> Any:
        now = "" if self._clock is None else str(round(self._clock() * 1e6))
        return self._script(
            keys=self._keys,
            args=[
                op,
                now,
                repr(self.rate_per_s),
                self.burst,
                self.failure_threshold,
                math.ceil(self.cooldown_s * 1e6),
                IDLE_TTL_S * 1000,
                repr(rate_floor(self.rate_per_s)),
                repr(self.rate_per_s / AIMD_STEPS),
                retry_after_us,
                granted_us,
                round(PROBE_POLL_S * 1e6),
                max_reserve_us,
            ],
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


T = TypeVar("T")
SHORT_WAIT_S = 1.0  # waits this short are slept through (holding a thread) rather than re-queued
# The endpoint label of a call made through a lambda, by throttle (metrics only).
ENDPOINTS = {"submit": "enqueue", "poll": "status"}


def wait_turn(throttle: Throttle) -> float:
    """Take a turn (reserving one within a second and sleeping until it): 0.0 when the
    call may go now, else the seconds to come back after (the caller re-queues itself).

    A reserved turn is this caller's alone, so threads waiting on one budget go in turn
    instead of all waking together and all but one re-queueing their task. A 429
    reported, or the breaker opened, while it slept holds it like any other caller."""
    grant = throttle.reserve(SHORT_WAIT_S)
    observe_wait(throttle.name, grant.wait_s)
    if not grant.granted:
        return grant.wait_s
    if grant.wait_s > 0:
        time.sleep(grant.wait_s)
        held = throttle.held_s()
        if held > 0:
            return held  # the reserved turn goes unused: a lost turn, never an extra call
    return 0.0


def reported(throttle: Throttle, call: Callable[[], T], endpoint: str = "") -> T:
    """Make one provider call and report how it went to the throttle (and its latency,
    by ``endpoint``, default the call's name, to the metrics)."""
    if not endpoint:
        name = getattr(call, "__name__", "")
        endpoint = name if name.isidentifier() else ENDPOINTS.get(throttle.name, throttle.name)
    started = time.perf_counter()
    try:
        result = call()
    except BaseException as exc:
        observe_call(endpoint, time.perf_counter() - started, ok=False)
        outcome = outcome_for(exc)
        if outcome is not None:
            throttle.report(outcome, retry_after_s=getattr(exc, "retry_after_s", None))
        raise
    observe_call(endpoint, time.perf_counter() - started, ok=True)
    throttle.report(Outcome.OK)
    return result
