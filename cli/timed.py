"""``seedq submit --at/--window/--tz`` and ``seedq schedules``: runs held by time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from cli.console import make_console
from producer.timing import RunTiming
from seedq.errors import ConfigError
from seedq.schedules import load_schedules, next_runs
from seedq.settings import load_settings
from seedq.windows import parse_at, zone

out = make_console()


def run_timing(
    at: str | None, window: str | None, tz: str, now: datetime | None = None
) -> RunTiming:
    """The timing of ``submit``'s options; ``--at`` is read in the local time zone."""
    zone(tz)
    local_now = now or datetime.now().astimezone()
    start = parse_at(at, local_now) if at else None
    if start is not None and start <= local_now:
        raise ConfigError(f"--at {at!r} is in the past")
    return RunTiming(start_at=start.timestamp() if start else None, window=window, tz=tz)


def print_timing(timing: RunTiming) -> None:
    if timing.start_at is not None:
        when = datetime.fromtimestamp(timing.start_at).astimezone()
        out.print(f"scheduled: starts at {when:%Y-%m-%d %H:%M %Z}; jobs wait in Redis until then")
    if timing.window:
        out.print(f"window: submits only {timing.window} ({timing.tz}); in-flight jobs finish")


def schedules_command(
    file: Path | None = typer.Argument(
        None, help="Schedule file (default: SEEDQ_SCHEDULES).", show_default=False
    ),
    count: int = typer.Option(3, min=1, max=50, help="Next run times shown per schedule."),
) -> None:
    """Check a schedule file and show each schedule's next run times."""
    path = file or load_settings().schedules
    if path is None:
        raise ConfigError("no schedule file: pass one or set SEEDQ_SCHEDULES")
    now = datetime.now().astimezone()
    table = Table(title=f"Schedules ({path})", title_justify="left")
    for col in ("name", "cron", "time zone", "manifest", "window", "next runs"):
        table.add_column(col)
    for s in load_schedules(path):
        upcoming = next_runs(s.cron, s.timezone, now, count)
        when = "\n".join(f"{t:%Y-%m-%d %H:%M %Z}" for t in upcoming)
        table.add_row(s.name, s.cron, s.timezone, s.manifest, s.window or "-", when)
    out.print(table)
