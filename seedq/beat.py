"""Celery beat entries of the schedule file: a cron schedule per named schedule, in its
own time zone (Celery's ``crontab`` knows one zone for the whole app)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from celery.schedules import BaseSchedule, schedstate

from seedq import contract
from seedq.schedules import TASK_SCHEDULED_RUN, due, load_schedules, next_runs


class cron_schedule(BaseSchedule):  # type: ignore[misc]
    """A croniter expression evaluated in the IANA zone ``tz``."""

    def __init__(self, cron: str, tz: str, nowfun: Any = None, app: Any = None) -> None:
        super().__init__(nowfun=nowfun, app=app)
        self.cron = cron
        self.tz_name = tz

    def _now(self) -> datetime:
        now: datetime = self.nowfun() if self.nowfun else datetime.now(UTC)
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    @staticmethod
    def _aware(dt: datetime) -> datetime:
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        upcoming = next_runs(self.cron, self.tz_name, self._aware(last_run_at))[0]
        return upcoming - self._now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        is_due, next_s = due(self.cron, self.tz_name, self._aware(last_run_at), self._now())
        return schedstate(is_due, next_s)

    def __repr__(self) -> str:
        return f"<cron {self.cron} {self.tz_name}>"

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return self.__class__, (self.cron, self.tz_name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, cron_schedule):
            return (self.cron, self.tz_name) == (other.cron, other.tz_name)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.cron, self.tz_name))


def beat_schedule(path: Path) -> dict[str, dict[str, Any]]:
    """``beat_schedule`` for the schedule file at ``path`` (ConfigError when invalid)."""
    return {
        f"seedq:{s.name}": {
            "task": TASK_SCHEDULED_RUN,
            "schedule": cron_schedule(s.cron, s.timezone),
            "kwargs": {"name": s.name},
            "options": {"queue": contract.QUEUE_SUBMIT},
        }
        for s in load_schedules(path)
    }
