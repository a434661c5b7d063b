"""Global request throttling shared by every worker process on every machine.

One :class:`Throttle` per call family ("submit", "poll"); all its state lives in Redis
and every decision is one Lua script, timed by the Redis server's clock
(``redis.call('TIME')``), so workers with skewed clocks still share one budget.

Four mechanisms, checked in this order by :meth:`Throttle.try_acquire`:

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
takes nothing, so ``try_acquire`` may be repeated freely. The script is
``worker/lua/throttle.lua``; what counts as OK, RATE_LIMITED or FAILURE is
``worker.call_results``; taking turns and reporting calls, ``worker.throttled_calls``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from seedq import keys
from seedq.scripts import load
from worker.call_results import CallResult

IDLE_TTL_S = 3600  # a limiter untouched this long is forgotten: it restarts at full rate
MAX_BACKOFF_S = 3600.0  # a Retry-After beyond this is taken as this (absurd header guard)
PROBE_POLL_S = 1.0  # callers waiting on a half-open probe look again at least this often
AIMD_STEPS = 20  # additive increase: configured rate / AIMD_STEPS per second of OKs

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}


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
        self._script = client.register_script(load("throttle", "worker"))
        # The grant time of this thread's last call, so its 429 can be told apart from
        # 429s of calls sent before the last rate cut.
        self._local = threading.local()

    @classmethod
    def from_spec(
        cls, client: redis.Redis, name: str, spec: str, burst: int = 1, **options: Any
    ) -> Throttle:
        """A throttle whose rate is a :func:`parse_rate` spec (the settings' form)."""
        return cls(client, name, parse_rate(spec), burst, **options)

    def acquire_or_wait_s(self) -> float:
        """0.0: a call may go now (its slot is taken); else seconds to wait, nothing taken."""
        return self.try_acquire().wait_s

    def try_acquire(self) -> Grant:
        """:meth:`acquire_or_wait_s` as a :class:`Grant`: with the server time of the
        decision and its reason."""
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

    def report(self, result: CallResult, *, retry_after_s: float | None = None) -> None:
        """Feed a call's result back; ``retry_after_s`` only counts with RATE_LIMITED."""
        wait_s = retry_after_s if result is CallResult.RATE_LIMITED and retry_after_s else 0.0
        wait_s = min(MAX_BACKOFF_S, wait_s) if wait_s > 0 else 0.0  # also drops NaN
        granted_us = getattr(self._local, "granted_us", None)
        self._local.granted_us = None
        self._run(
            result.value,
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
