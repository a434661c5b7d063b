"""Run budgets: the most a run may commit, in the provider's currency.

A run's budget hash (``keys.run_budget``) holds its ``cap``, what admitted jobs have
``reserved`` (their estimates, taken by the admit script with their slot) and what
finished ones have ``spent``. Admission pauses a run whose next job would take it past
its cap (``seedq/lua/admit.lua``); the reservations are returned by a requeue and
settled by the job store's transitions.
"""

from __future__ import annotations

from typing import Any

import redis

from seedq import keys
from seedq.store import decoded


class Budgets:
    """The budget hashes of runs."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def set_cap(self, run_id: str, amount: float) -> None:
        self.redis.hset(keys.run_budget(run_id), "cap", amount)

    def of(self, run_id: str) -> dict[str, float]:
        """``cap`` (when set), ``reserved`` and ``spent``, those that were ever written."""
        raw: dict[Any, Any] = self.redis.hgetall(keys.run_budget(run_id))
        return {decoded(k): float(v) for k, v in raw.items()}
