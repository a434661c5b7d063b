"""Time decisions for runs, pure: submission windows, delayed starts, and what the tick
does about them.

A *window* such as ``"22:00-06:00"`` is a daily span of wall-clock time in a time zone;
it may cross midnight (then it is the evening part plus the morning part). Start
included, end excluded; ``"00:00-00:00"`` (equal ends) means all day. Wall-clock times
follow the zone's daylight-saving changes: a window "01:00-03:00" in Europe/Paris is
shorter on the night clocks go forward.

Nothing here reads a clock or Redis: callers pass ``now`` (aware datetimes or epoch
seconds) and the run's fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from seedq.contract import RunStatus
from seedq.errors import ConfigError

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")

# Marks a run paused by its window (field ``paused_by``), so that only those are resumed.
PAUSED_BY_WINDOW = "window"


@dataclass(frozen=True, slots=True)
class Window:
    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _clock(hour: str, minute: str, text: str) -> time:
    h, m = int(hour), int(minute)
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ConfigError(f"window {text!r}: {hour}:{minute} is not a time of day")
    return time(h, m)


def parse_window(text: str) -> Window:
    """``"22:00-06:00"`` → :class:`Window`; ConfigError when malformed."""
    match = _WINDOW.match(text)
    if not match:
        raise ConfigError(f"window {text!r} is not HH:MM-HH:MM (e.g. 22:00-06:00)")
    h1, m1, h2, m2 = match.groups()
    return Window(_clock(h1, m1, text), _clock(h2, m2, text))


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ConfigError when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)"
        ) from None


def in_window(now: datetime, window: Window | str, tz: str | tzinfo) -> bool:
    """Whether the aware instant ``now`` falls inside the daily ``window`` in ``tz``."""
    win = parse_window(window) if isinstance(window, str) else window
    where = zone(tz) if isinstance(tz, str) else tz
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local = now.astimezone(where).time().replace(tzinfo=None, fold=0)
    if win.start == win.end:
        return True
    if win.start < win.end:
        return win.start <= local < win.end
    return local >= win.start or local < win.end  # crosses midnight


def window_reason(window: Window | str, tz: str) -> str:
    """What an operator sees on a run held by its window."""
    return f"outside its window {window} ({tz})"


def parse_at(text: str, now: datetime) -> datetime:
    """The start time of ``--at``: an ISO date-time (naive ones in ``now``'s zone) or
    ``HH:MM``, its next occurrence after ``now`` in ``now``'s zone. Aware result."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    where = now.tzinfo
    match = _HHMM.match(text)
    if match:
        clock = _clock(match.group(1), match.group(2), text)
        candidate = datetime.combine(now.date(), clock, tzinfo=where)
        if candidate <= now:
            candidate = datetime.combine(now.date() + timedelta(days=1), clock, tzinfo=where)
        return candidate
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--at {text!r} is neither HH:MM nor an ISO date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=where)


@dataclass(frozen=True, slots=True)
class TimedRun:
    """The fields of a run hash that the tick's time step reads."""

    status: str
    reason: str = ""
    paused_by: str = ""
    start_at: float | None = None  # epoch seconds
    window: str = ""
    tz: str = "UTC"


@dataclass(frozen=True, slots=True)
class Change:
    """Move the run from ``expect_status``/``expect_reason`` to ``status``/``reason``."""

    expect_status: str
    expect_reason: str
    status: str
    reason: str = ""
    paused_by: str = ""


def held_status(run: TimedRun, now_s: float) -> tuple[RunStatus, str]:
    """The status and reason a run with these timings should have at ``now_s`` if it
    were free to run: scheduled before its start, paused outside its window."""
    if run.start_at is not None and now_s < run.start_at:
        return RunStatus.SCHEDULED, ""
    if run.window:
        moment = datetime.fromtimestamp(now_s, tz=zone(run.tz))
        if not in_window(moment, run.window, run.tz):
            return RunStatus.PAUSED, window_reason(run.window, run.tz)
    return RunStatus.ACTIVE, ""


def decide(run: TimedRun, now_s: float) -> Change | None:
    """What the tick does to one timed run, if anything.

    Only the run's own holds are lifted: a scheduled run whose start has come, a run
    this step paused for its window (same ``paused_by`` and reason). A run an operator
    paused, or one paused on its budget, is left alone; so is a cancelled one.
    """
    target, reason = held_status(run, now_s)
    ours = run.status == RunStatus.PAUSED and run.paused_by == PAUSED_BY_WINDOW
    ours = ours and run.reason == window_reason(run.window, run.tz)
    movable = run.status in (RunStatus.ACTIVE, RunStatus.SCHEDULED) or ours
    if not movable or (run.status, run.reason) == (target, reason):
        return None
    if run.status == RunStatus.ACTIVE and target == RunStatus.SCHEDULED:
        return None  # started already (an operator resumed it early): never go back
    by = PAUSED_BY_WINDOW if target == RunStatus.PAUSED else ""
    return Change(run.status, run.reason, target, reason, by)
