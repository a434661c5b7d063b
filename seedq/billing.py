"""The billed-cost ledger: what the provider charged for each job, beside the estimate.

A job's money fields, kept apart on purpose:

- ``est_cost``: the estimate at registration (what admission reserves);
- ``cost``: the estimate at delivery, from the clip's real duration;
- ``billed_cost``: what the provider billed (``GET /api/ai/generations``), the sum of
  both generations' costs when the job had a stuck one killed
  (``stuck_generation_id``); set once, never changed;
- ``billed_status``: ``billed`` once known, ``unknown`` when the cost never showed
  within the looks :mod:`worker.bills` allows; absent while seedq is still looking
  (``pending``).

A job enters ``keys.UNBILLED`` in the move's Lua script (``seedq/lua/transition.lua``) when its
generation has succeeded and it leaves delivery (delivered, or failed with its file in
quarantine); the tick's biller (``worker.biller``) asks the provider and records the
answer here, in one script with the run's budget (``spent`` moves from the estimate to
the bill) and the run's billing totals (``keys.run_billing``), so a crash can neither
charge a bill twice nor leave it half recorded (``seedq/lua/bill_*.lua``). Part of the
store's gateway to Redis: callers reach it as ``JobStore.billing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from seedq import keys, scripts
from seedq.records import decoded

BILLED = "billed"
PENDING = "pending"
UNKNOWN = "unknown"


def billing_status(raw: dict[str, str]) -> str:
    """A job record's billing: ``billed``, ``unknown`` (never showed) or ``pending``."""
    if raw.get("billed_cost"):
        return BILLED
    return raw.get("billed_status") or PENDING


@dataclass(frozen=True, slots=True)
class RunBilling:
    """A run's money as :data:`keys.run_billing` keeps it."""

    paid_jobs: int = 0  # jobs whose generation succeeded: each has a bill to learn
    estimated: float = 0.0
    billed: float = 0.0
    billed_jobs: int = 0
    unknown_jobs: int = 0
    warned: int = 0

    @property
    def pending_jobs(self) -> int:
        return max(0, self.paid_jobs - self.billed_jobs - self.unknown_jobs)

    def billed_text(self) -> str:
        """The billed total for people; never an estimate passed off as a bill."""
        parts = [f"{self.billed:g}"]
        if self.pending_jobs:
            parts.append(f"{self.pending_jobs} pending")
        if self.unknown_jobs:
            parts.append(f"{self.unknown_jobs} unknown")
        return parts[0] + (f" (+{', '.join(parts[1:])})" if len(parts) > 1 else "")


class Billing:
    """Records bills; every change is one Lua call (see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._record = scripts.register(client, "bill_record")
        self._give_up = scripts.register(client, "bill_give_up")

    def due(self, now: float, limit: int) -> list[str]:
        """Jobs whose bill is due to be asked for, the longest waiting first."""
        raw: list[Any] = self.redis.zrangebyscore(keys.UNBILLED, "-inf", now, start=0, num=limit)
        return [decoded(v) for v in raw]

    def unbilled(self) -> int:
        return int(self.redis.zcard(keys.UNBILLED))

    def asking_now(self, run_id: str, now: float, limit: int = 1000) -> bool:
        """Whether a job of this run is due to be asked for its bill (the next pass will
        ask); False once every bill is known or waits for a later look."""
        for job_id in self.due(now, limit):
            if decoded(self.redis.hget(keys.job(job_id), "run_id") or "") == run_id:
                return True
        return False

    def record(self, job_id: str, run_id: str, amount: float, now: float) -> bool:
        """The job's bill is ``amount``; False when it was recorded already."""
        done = self._record(
            keys=[
                keys.job(job_id),
                keys.run_budget(run_id),
                keys.run_billing(run_id),
                keys.UNBILLED,
            ],
            args=[job_id, run_id, repr(round(amount, 6)), now],
        )
        return bool(done)

    def look_later(self, job_id: str, at: float, *, counted: bool = True) -> None:
        """Ask again at ``at``; ``counted``: this look got an answer without a cost (a
        look that never reached the provider does not count against the job)."""
        with self.redis.pipeline() as pipe:
            pipe.zadd(keys.UNBILLED, {job_id: at}, xx=True)  # XX: not back once recorded
            if counted:
                pipe.hincrby(keys.job(job_id), "billing_looks", 1)
            pipe.execute()

    def give_up(self, job_id: str, run_id: str) -> bool:
        """Stop looking: the job's bill stays ``unknown``, said as such."""
        return bool(
            self._give_up(
                keys=[keys.job(job_id), keys.run_billing(run_id), keys.UNBILLED],
                args=[job_id, run_id],
            )
        )

    def forget(self, job_id: str) -> None:
        """Drop an entry that is not a job to bill any more (registered again)."""
        self.redis.zrem(keys.UNBILLED, job_id)

    def run(self, run_id: str) -> RunBilling:
        raw: dict[Any, Any] = self.redis.hgetall(keys.run_billing(run_id))
        data = {decoded(k): decoded(v) for k, v in raw.items()}

        def num(name: str) -> float:
            try:
                return float(data.get(name) or 0)
            except ValueError:
                return 0.0

        return RunBilling(
            paid_jobs=int(num("paid_jobs")),
            estimated=round(num("estimated"), 6),
            billed=round(num("billed"), 6),
            billed_jobs=int(num("billed_jobs")),
            unknown_jobs=int(num("unknown_jobs")),
            warned=int(num("warned")),
        )
