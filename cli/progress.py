"""Watching runs: a live progress bar per run, and the end-of-run summary."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seedq.billing import RunBilling
from seedq.contract import JobState
from seedq.errors import SeedqError
from seedq.store import JobStore, RunInfo

ORDER = [s.value for s in JobState]
IN_FLIGHT = ("submitting", "submitted", "retrying", "generated")


def finished(info: RunInfo) -> int:
    return sum(info.counts.get(s, 0) for s in ("delivered", "failed", "cancelled"))


def in_flight(info: RunInfo) -> int:
    return sum(info.counts.get(s, 0) for s in IN_FLIGHT)


def is_over(info: RunInfo) -> bool:
    """All jobs ended, or the run is paused and nothing it started is still going."""
    if finished(info) >= info.total and info.status != "registering":
        return True
    return info.status in ("paused", "cancelled") and in_flight(info) == 0


def breakdown(info: RunInfo) -> str:
    parts = [f"{info.counts[s]} {s}" for s in ORDER if info.counts.get(s)]
    return ", ".join(parts) or "nothing yet"


def _run(store: JobStore, run_id: str) -> RunInfo:
    info = store.run(run_id)
    if info is None:
        raise SeedqError(f"run {run_id} is not in Redis any more (was the database flushed?)")
    return info


def follow(store: JobStore, run_id: str, console: Console, *, timeout_s: float | None) -> RunInfo:
    """Show the run's progress until it is over (or the timeout passes)."""
    started = time.monotonic()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    info = _run(store, run_id)
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(info.name[:30], total=info.total, detail="")
        while True:
            info = _run(store, run_id)
            bar.update(task, completed=finished(info), total=info.total, detail=breakdown(info))
            if is_over(info) or (timeout_s is not None and time.monotonic() - started > timeout_s):
                return info
            time.sleep(0.5)


def runs_table(runs: list[RunInfo], billing: dict[str, RunBilling] | None = None) -> Table:
    """The runs, and with ``billing`` their money: seedq's estimate for the clips the
    provider made, what it billed (with the bills still pending or never shown), and
    how many clips were delivered with warnings."""
    table = Table(title="Runs", title_justify="left")
    money = ("estimated", "billed", "warnings") if billing is not None else ()
    for col in ("run", "name", "status", "done", "jobs", "states", *money):
        table.add_column(col)
    for info in runs:
        cells = [
            info.id,
            info.name,
            info.shown_status,
            str(finished(info)),
            str(info.total),
            breakdown(info),
        ]
        if billing is not None:
            b = billing.get(info.id, RunBilling())
            cells += [f"{b.estimated:g}", b.billed_text(), str(b.warned)]
        table.add_row(*cells)
    return table


def stuck_line(info: RunInfo) -> str | None:
    """The run's jobs retried for a stuck generation, for people; None when none was."""
    if not info.stuck_retries and not info.stuck_failures:
        return None
    line = (
        f"run {info.id}: {info.stuck_retries} job(s) had a generation stuck processing, "
        "killed and retried once (one more generation paid)"
    )
    if info.stuck_failures:
        line += f"; {info.stuck_failures} failed, stuck again or not retryable"
    return line
