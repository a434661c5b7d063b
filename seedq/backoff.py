"""Backoff between attempts, for every retry seedq makes (a job step, a webhook):
pure functions, with the randomness passed in."""

from __future__ import annotations


def compute_backoff(
    attempt: int, *, base_s: float, max_s: float, jitter: float, rand: float
) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, jittered.

    ``rand`` in [0, 1) is passed in so the function stays pure and testable.
    """
    delay = min(max_s, base_s * 2.0 ** max(0, min(attempt - 1, 40)))
    return delay * (1.0 - jitter) + delay * jitter * rand


def honour_retry_after(delay_s: float, retry_after_s: float | None, *, max_s: float) -> float:
    """A server's ``Retry-After`` is a floor under the delay, never shortened by jitter,
    and itself capped at ``max_s``."""
    if retry_after_s is None:
        return delay_s
    return max(delay_s, min(retry_after_s, max_s))
