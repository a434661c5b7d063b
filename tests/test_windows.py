"""Submission windows, delayed starts and the tick's decisions about them (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from seedq.errors import ConfigError
from seedq.windows import (
    PAUSED_BY_WINDOW,
    Change,
    TimedRun,
    decide,
    in_window,
    parse_at,
    parse_window,
    window_reason,
)

PARIS = ZoneInfo("Europe/Paris")


def paris(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS)


@pytest.mark.parametrize(
    ("now", "window", "inside"),
    [
        (paris(2026, 6, 1, 21, 59), "22:00-06:00", False),
        (paris(2026, 6, 1, 22, 0), "22:00-06:00", True),  # start included
        (paris(2026, 6, 1, 23, 59), "22:00-06:00", True),
        (paris(2026, 6, 2, 0, 0), "22:00-06:00", True),  # past midnight
        (paris(2026, 6, 2, 5, 59), "22:00-06:00", True),
        (paris(2026, 6, 2, 6, 0), "22:00-06:00", False),  # end excluded
        (paris(2026, 6, 2, 12, 0), "22:00-06:00", False),
        (paris(2026, 6, 2, 9, 0), "09:00-17:30", True),
        (paris(2026, 6, 2, 17, 30), "09:00-17:30", False),
        (paris(2026, 6, 2, 8, 59), "09:00-17:30", False),
        (paris(2026, 6, 2, 3, 0), "00:00-00:00", True),  # equal ends: all day
        # DST forward (2026-03-29 02:00 -> 03:00 in Paris): 01:30 UTC is 03:30 local
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "02:00-03:00", False),
        (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "01:00-03:00", True),  # 01:30 CET
        (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "01:00-03:00", False),  # 03:00 CEST
        # DST back (2026-10-25 03:00 -> 02:00): 02:30 happens twice, both inside
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "02:00-03:00", True),  # 02:30 CEST
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "02:00-03:00", True),  # 02:30 CET
        (datetime(2026, 10, 25, 2, 30, tzinfo=UTC), "02:00-03:00", False),  # 03:30 CET
        # the instant is read in the window's zone, whatever zone it comes in
        (datetime(2026, 6, 1, 20, 30, tzinfo=UTC), "22:00-06:00", True),  # 22:30 CEST
        (datetime(2026, 1, 1, 20, 30, tzinfo=UTC), "22:00-06:00", False),  # 21:30 CET
    ],
)
def test_in_window(now: datetime, window: str, inside: bool) -> None:
    assert in_window(now, window, "Europe/Paris") is inside


@pytest.mark.parametrize("bad", ["22-06", "25:00-06:00", "22:00-06:61", "", "22:00"])
def test_bad_windows(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_window(bad)


def test_window_normalised_and_naive_now_refused() -> None:
    assert str(parse_window(" 9:05 - 17:00 ")) == "09:05-17:00"
    with pytest.raises(ValueError):
        in_window(datetime(2026, 1, 1), "22:00-06:00", "UTC")
    with pytest.raises(ConfigError):
        in_window(datetime(2026, 1, 1, tzinfo=UTC), "22:00-06:00", "Mars/Olympus")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("23:30", paris(2026, 6, 1, 23, 30)),  # later today
        ("08:00", paris(2026, 6, 2, 8, 0)),  # passed today: tomorrow
        ("12:00", paris(2026, 6, 2, 12, 0)),  # exactly now: the next one
        ("2026-06-03T04:00", paris(2026, 6, 3, 4, 0)),  # naive ISO: local zone
        ("2026-06-03T04:00+00:00", datetime(2026, 6, 3, 4, 0, tzinfo=UTC)),
    ],
)
def test_parse_at(text: str, expected: datetime) -> None:
    assert parse_at(text, paris(2026, 6, 1, 12, 0)) == expected


def test_parse_at_rejects_garbage() -> None:
    with pytest.raises(ConfigError):
        parse_at("tonight", paris(2026, 6, 1, 12, 0))


WIN = "22:00-06:00"
TZ = "Europe/Paris"
OURS = window_reason(WIN, TZ)
NIGHT = paris(2026, 6, 1, 23, 0).timestamp()
DAY = paris(2026, 6, 1, 12, 0).timestamp()


@pytest.mark.parametrize(
    ("run", "now", "change"),
    [
        # active outside its window: paused by the window
        (
            TimedRun("active", window=WIN, tz=TZ),
            DAY,
            Change("active", "", "paused", OURS, "window"),
        ),
        (TimedRun("active", window=WIN, tz=TZ), NIGHT, None),
        # paused by the window, window open again: resumed
        (
            TimedRun("paused", OURS, PAUSED_BY_WINDOW, window=WIN, tz=TZ),
            NIGHT,
            Change("paused", OURS, "active"),
        ),
        (TimedRun("paused", OURS, PAUSED_BY_WINDOW, window=WIN, tz=TZ), DAY, None),
        # paused by an operator or its budget: never resumed by the window
        (TimedRun("paused", "operator", window=WIN, tz=TZ), NIGHT, None),
        (TimedRun("paused", "budget: 9.00 of 10.00", window=WIN, tz=TZ), NIGHT, None),
        (TimedRun("paused", "operator", PAUSED_BY_WINDOW, window=WIN, tz=TZ), NIGHT, None),
        (TimedRun("cancelled", window=WIN, tz=TZ), NIGHT, None),
        (TimedRun("registering", window=WIN, tz=TZ), DAY, None),
        # delayed start
        (TimedRun("scheduled", start_at=DAY + 60), DAY, None),
        (TimedRun("scheduled", start_at=DAY), DAY, Change("scheduled", "", "active")),
        # a delayed start with a window opens into the window's decision
        (
            TimedRun("scheduled", start_at=DAY, window=WIN, tz=TZ),
            DAY,
            Change("scheduled", "", "paused", OURS, "window"),
        ),
        (
            TimedRun("scheduled", start_at=NIGHT, window=WIN, tz=TZ),
            NIGHT,
            Change("scheduled", "", "active"),
        ),
        # resumed early by an operator: never back to scheduled
        (TimedRun("active", start_at=DAY + 60), DAY, None),
    ],
)
def test_decide(run: TimedRun, now: float, change: Change | None) -> None:
    assert decide(run, now) == change
