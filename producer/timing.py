"""Runs held by time: a delayed start (``--at``, status ``scheduled`` with ``start_at``)
and a submission window (``--window``, fields ``window`` and ``tz``).

:class:`TimedStore` is the job store as :func:`producer.submit.submit` sees it, with the
run created already held (so admission skips it while its jobs register) and left held
when registration ends; the worker's tick (``worker/timekeeper.py``) lifts the hold.
This module and the timekeeper are the gateways to the run-timing keys
(``keys.TIMED_RUNS`` and a run's ``start_at``, ``window``, ``tz`` and ``paused_by``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from seedq import keys
from seedq.contract import RunStatus
from seedq.store import JobStore
from seedq.windows import PAUSED_BY_WINDOW, TimedRun, held_status, parse_window, zone


@dataclass(frozen=True, slots=True)
class RunTiming:
    """When a run may submit: not before ``start_at`` (epoch s), only inside ``window``."""

    start_at: float | None = None
    window: str | None = None
    tz: str = "UTC"

    def __post_init__(self) -> None:
        zone(self.tz)  # ConfigError when unknown
        if self.window is not None:
            object.__setattr__(self, "window", str(parse_window(self.window)))

    @property
    def timed(self) -> bool:
        return self.start_at is not None or self.window is not None

    def fields(self) -> dict[str, str | float]:
        out: dict[str, str | float] = {}
        if self.start_at is not None:
            out["start_at"] = self.start_at
        if self.window is not None:
            out["window"] = self.window
            out["tz"] = self.tz
        return out

    def initial(self, now_s: float) -> tuple[RunStatus, str]:
        """The status and reason the run starts with."""
        status, reason = held_status(
            TimedRun(
                RunStatus.REGISTERING,
                start_at=self.start_at,
                window=self.window or "",
                tz=self.tz,
            ),
            now_s,
        )
        return (RunStatus.REGISTERING, "") if status == RunStatus.ACTIVE else (status, reason)


class TimedStore(JobStore):
    """A job store whose runs are created with a timing (see the module docstring)."""

    def __init__(self, client: redis.Redis, timing: RunTiming, clock: Any = time.time) -> None:
        super().__init__(client)
        self.timing = timing
        self.clock = clock

    def create_run(self, run_id: str, name: str, meta: dict[str, Any]) -> None:
        super().create_run(run_id, name, meta)
        if not self.timing.timed:
            return
        status, reason = self.timing.initial(float(self.clock()))
        mapping: dict[str, str | float] = {"status": status, **self.timing.fields()}
        if reason:
            mapping.update(reason=reason, paused_by=PAUSED_BY_WINDOW)
        with self.redis.pipeline() as pipe:
            pipe.hset(keys.run(run_id), mapping=mapping)  # type: ignore[arg-type]
            pipe.sadd(keys.TIMED_RUNS, run_id)
            pipe.execute()
