"""Watching runs: a live progress bar per run, and the end-of-run summary."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seedq.billing import RunBilling
from seedq.budget import BudgetState, paused_by_budget
from seedq.contract import JobState
from seedq.errors import SeedqError
from seedq.notify import IN_FLIGHT_STATES
from seedq.store import JobStore, RunInfo

ORDER = [s.value for s in JobState]
IN_FLIGHT = IN_FLIGHT_STATES  # started and not over: the notifications count the same


def finished(info: RunInfo) -> int:
    return sum(info.counts.get(s, 0) for s in ("delivered", "failed", "cancelled"))


def in_flight(info: RunInfo) -> int:
    return sum(info.counts.get(s, 0) for s in IN_FLIGHT)


def is_over(info: RunInfo, holding: int = 0) -> bool:
    """All jobs ended, or the run is paused and nothing it started is still going.

    ``holding`` is how many of its jobs hold an in-flight slot (``Admission.holding``):
    a job admitted just before a budget pause is still ``registered`` but will be sent
    and delivered, so the run is not over while it holds its slot."""
    if finished(info) >= info.total and info.status != "registering":
        return True
    return info.status in ("paused", "cancelled") and in_flight(info) == 0 and holding == 0


def breakdown(info: RunInfo) -> str:
    parts = [f"{info.counts[s]} {s}" for s in ORDER if info.counts.get(s)]
    return ", ".join(parts) or "nothing yet"


def _run(store: JobStore, run_id: str) -> RunInfo:
    info = store.run(run_id)
    if info is None:
        raise SeedqError(f"run {run_id} is not in Redis any more (was the database flushed?)")
    return info


def follow(
    store: JobStore,
    run_id: str,
    console: Console,
    *,
    timeout_s: float | None,
    holding: Callable[[str], int] | None = None,
) -> RunInfo:
    """Show the run's progress until it is over (or the timeout passes); ``holding``
    counts the run's jobs that hold a slot (see :func:`is_over`)."""
    started = time.monotonic()
    columns = (
        # The description is the run's name: text, not markup (see cli.console).
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}", markup=False),
        TimeElapsedColumn(),
    )
    info = _run(store, run_id)
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(info.name[:30], total=info.total, detail="")
        while True:
            info = _run(store, run_id)
            bar.update(task, completed=finished(info), total=info.total, detail=breakdown(info))
            held = holding(run_id) if holding is not None else 0
            if is_over(info, held):
                return info
            if timeout_s is not None and time.monotonic() - started > timeout_s:
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


def budget_line(info: RunInfo, budget: BudgetState, resume_hint: str | None) -> str | None:
    """What the run spent of its budget, and the jobs still waiting for more of it;
    None for a run with no cap. ``resume_hint`` says how to raise the cap, where one can."""
    if budget.cap is None:
        return None
    line = f"budget: spent {budget.spent:.2f} of {budget.cap:.2f}"
    if budget.reserved > 1e-9:
        line += f" ({budget.reserved:.2f} more reserved by jobs under way)"
    waiting = info.counts.get("registered", 0)
    if paused_by_budget(info.status, info.reason) and waiting:
        line += f"; {waiting} job(s) wait for more budget"
        if resume_hint:
            line += f": {resume_hint}"
    return line
