"""When to try a failed step again: pure functions, bounded by attempts and by time."""

from __future__ import annotations

import random
from dataclasses import dataclass

from seedq.backoff import compute_backoff, honour_retry_after
from seedq.settings import Settings

__all__ = ["RetryPolicy", "compute_backoff", "next_delay"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 5.0
    max_delay_s: float = 300.0
    max_attempts: int = 10
    max_total_s: float = 6 * 3600.0
    jitter: float = 0.5  # share of each delay that is random, so workers do not stampede

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base_s=settings.retry_base_s,
            max_delay_s=settings.retry_max_delay_s,
            max_attempts=settings.retry_max_attempts,
            max_total_s=settings.retry_max_total_s,
        )


def next_delay(
    policy: RetryPolicy,
    *,
    attempt: int,
    elapsed_s: float,
    retry_after_s: float | None = None,
    rand: float | None = None,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the step must give up.

    A server's ``Retry-After`` is a floor, never shortened by jitter.
    """
    if attempt >= policy.max_attempts or elapsed_s >= policy.max_total_s:
        return None
    delay = compute_backoff(
        attempt,
        base_s=policy.base_s,
        max_s=policy.max_delay_s,
        jitter=policy.jitter,
        # bandit B311: retry jitter, not a secret.
        rand=random.random() if rand is None else rand,  # nosec B311
    )
    delay = honour_retry_after(delay, retry_after_s, max_s=policy.max_delay_s)
    if elapsed_s + delay > policy.max_total_s:
        return None
    return delay
