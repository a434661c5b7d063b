"""Run budgets: the most a run may commit, in the provider's currency.

A run's budget hash (``keys.run_budget``) holds its ``cap``, what admitted jobs have
``reserved`` (their estimates, taken by the admit script with their slot) and what
finished ones have ``spent``. Admission pauses a run whose next job would take it past
its cap (``seedq/lua/admit.lua``); the reservations are returned by a requeue and
settled by the job store's transitions.

A budget pause stops admission only: the jobs admitted before it fit inside the cap
(their estimates are reserved), so they are still sent and delivered
(:func:`admitted_may_start`). Raising the cap (``seedq resume RUN --budget``) lets the
rest in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from seedq import keys
from seedq.contract import RunStatus
from seedq.errors import SeedqError
from seedq.store import decoded

# How every budget pause reason starts (``seedq.admission.BUDGET_PAUSE``, which the
# admit script formats; a test checks they agree).
BUDGET_REASON_PREFIX = "budget: "


def paused_by_budget(status: str, reason: str) -> bool:
    """The run is paused because its next job would pass its cap (and nothing else
    paused it since: an operator's or a fatal pause writes its own reason)."""
    return status == RunStatus.PAUSED and reason.startswith(BUDGET_REASON_PREFIX)


def admitted_may_start(status: str, reason: str) -> bool:
    """May a job admitted before its run was paused still be sent? Only when the pause
    is the budget's: such a job's estimate is reserved inside the cap already."""
    return paused_by_budget(status, reason)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A run's budget as read: its cap (None: no cap), and what is reserved and spent."""

    cap: float | None = None
    reserved: float = 0.0
    spent: float = 0.0

    @property
    def committed(self) -> float:
        return self.reserved + self.spent


class Budgets:
    """The budget hashes of runs."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def set_cap(self, run_id: str, amount: float) -> None:
        """Set (or raise, or lower) the run's cap; admission reads it on its next pass."""
        if amount < 0:
            raise SeedqError(f"a budget cannot be negative ({amount:g})")
        self.redis.hset(keys.run_budget(run_id), "cap", amount)

    def of(self, run_id: str) -> dict[str, float]:
        """``cap`` (when set), ``reserved`` and ``spent``, those that were ever written."""
        raw: dict[Any, Any] = self.redis.hgetall(keys.run_budget(run_id))
        return {decoded(k): float(v) for k, v in raw.items()}

    def state(self, run_id: str) -> BudgetState:
        found = self.of(run_id)
        return BudgetState(found.get("cap"), found.get("reserved", 0.0), found.get("spent", 0.0))
