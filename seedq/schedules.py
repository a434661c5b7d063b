"""Named schedules of runs (``SEEDQ_SCHEDULES``, a YAML file; see docs/schedules.md).

The file model and the pure time arithmetic live here; Celery beat gets its entries
from :func:`beat_entries` (via ``seedq.queueing.celery_config``) and the task that runs
one schedule is ``worker.scheduled``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from seedq.errors import ConfigError
from seedq.windows import parse_window, zone

TASK_SCHEDULED_RUN = "seedq.scheduled_run"
MAX_SCHEDULE_FILE_BYTES = 1024 * 1024


class ScheduleFileError(ConfigError, click.ClickException):
    """The schedule file is unreadable or invalid.

    Also a ClickException: Celery's command line (``celery beat``, ``celery worker``)
    reads the configuration while parsing its options, and shows a ClickException as a
    plain ``Error: ...`` line and exit status, never a traceback."""

    exit_code = 2

    def __str__(self) -> str:
        return self.message


class Schedule(BaseModel):
    """One named schedule: when, what, and with which run options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    cron: str
    timezone: str = "UTC"
    manifest: str = Field(min_length=1)
    run_name: str | None = None
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    budget: float | None = Field(default=None, ge=0)
    model: str | None = None
    sets: dict[str, str] = Field(default_factory=dict)
    window: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (5 fields, e.g. '0 22 * * *')")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zone(value)
        except ConfigError as exc:  # pydantic reports ValueError, not our errors
            raise ValueError(str(exc)) from None
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(parse_window(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("manifest")
    @classmethod
    def _manifest(cls, value: str) -> str:
        if "://" in value and not value.startswith(("s3://", "https://")):
            raise ValueError("manifest must be a local path, an s3:// URI or an https:// URL")
        return value

    @field_validator("sets", mode="before")
    @classmethod
    def _sets(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k).strip().lower(): str(v) for k, v in value.items()}
        return value


class ScheduleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schedules: list[Schedule]

    @field_validator("schedules")
    @classmethod
    def _unique(cls, value: list[Schedule]) -> list[Schedule]:
        seen: set[str] = set()
        for schedule in value:
            if schedule.name in seen:
                raise ValueError(f"two schedules are named {schedule.name!r}")
            seen.add(schedule.name)
        return value


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """``schedules[2] (nightly).cron`` from pydantic's ``("schedules", 2, "cron")``."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] == "schedules":
            label = f"schedules[{part}]"
            try:
                name = data["schedules"][part].get("name")
            except (KeyError, IndexError, TypeError, AttributeError):
                name = None
            parts[-1] = f"{label} ({name})" if name else label
        else:
            parts.append(str(part))
    return ".".join(parts)


def parse_schedules(text: str, source: str = "schedules") -> list[Schedule]:
    """The schedules of a YAML document; ConfigError listing every problem by schedule."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScheduleFileError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        data = {"schedules": []}
    if isinstance(data, list):
        data = {"schedules": data}
    try:
        return ScheduleFile.model_validate(data).schedules
    except ValidationError as exc:
        lines = [
            f"{source}: {_location(tuple(e['loc']), data)}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise ScheduleFileError("invalid schedule file\n" + "\n".join(lines)) from None


def load_schedules(path: Path) -> list[Schedule]:
    """Read and check ``SEEDQ_SCHEDULES``; ConfigError (never a traceback) when bad."""
    try:
        if path.stat().st_size > MAX_SCHEDULE_FILE_BYTES:
            raise ScheduleFileError(f"{path}: larger than {MAX_SCHEDULE_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScheduleFileError(f"SEEDQ_SCHEDULES={path}: cannot read it: {exc}") from None
    return parse_schedules(text, str(path))


def find_schedule(schedules: list[Schedule], name: str) -> Schedule:
    for schedule in schedules:
        if schedule.name == name:
            return schedule
    raise ConfigError(f"no schedule named {name!r}")


def next_runs(cron: str, tz: str, after: datetime, count: int = 1) -> list[datetime]:
    """The next ``count`` times (aware, in ``tz``) the cron expression fires after
    ``after``; wall-clock in the zone, so "0 22 * * *" stays at 22:00 across DST."""
    it = croniter(cron, after.astimezone(zone(tz)))
    return [it.get_next(datetime) for _ in range(count)]


def last_firing(cron: str, tz: str, now: datetime) -> datetime:
    """The latest time (aware, in ``tz``) at or before ``now`` that the expression fired:
    the firing a run started at ``now`` belongs to (beat sends it a moment after)."""
    it = croniter(cron, (now + timedelta(seconds=1)).astimezone(zone(tz)))
    fired: datetime = it.get_prev(datetime)
    return fired


def due(cron: str, tz: str, last_run_at: datetime, now: datetime) -> tuple[bool, float]:
    """Celery beat's question: is a run due now (one was due since ``last_run_at``), and
    how many seconds until the next check."""
    upcoming = next_runs(cron, tz, last_run_at)[0]
    if upcoming <= now:
        following = next_runs(cron, tz, now)[0]
        return True, max((following - now).total_seconds(), 1.0)
    return False, max(min((upcoming - now).total_seconds(), 300.0), 1.0)


def run_name(schedule: Schedule, when: datetime) -> str:
    """``"<schedule> <date>"``: the date of ``when`` in the schedule's zone."""
    base = schedule.run_name or schedule.name
    return f"{base} {when.astimezone(zone(schedule.timezone)):%Y-%m-%d}"
