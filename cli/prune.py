"""``seedq prune``: archive and prune ended runs from Redis now, rather than waiting
for the tick to do it ``SEEDQ_RETENTION_DAYS`` after each run (``worker.retention``).
Each run's report is archived beside its clips before any record of it is deleted;
the clips and their sidecars are never touched."""

from __future__ import annotations

import re
import time

import typer

from cli.console import make_console
from cli.control import cluster_store
from seedq.settings import load_settings
from worker.retention import DAY_S, archive_run, due_now, prune_run, read_runs, to_archive

out = make_console()

UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S, "w": 7 * DAY_S}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``7d``, ``12h``, ``30m``, ``45s`` or ``2w`` (pure)."""
    match = DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use a number and s, m, h, d or w (7d)")
    return float(match.group(1)) * UNIT_S[match.group(2)]


def prune_command(
    older_than: str | None = typer.Option(
        None,
        "--older-than",
        help="Prune ended runs created at least this long ago: 7d, 12h, 30m, 0s "
        "(default: SEEDQ_RETENTION_DAYS days).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go; change nothing."),
) -> None:
    """Archive ended runs' reports beside their clips and delete the runs from Redis."""
    from storage import make_storage

    settings = load_settings()
    try:
        age_s = parse_duration(older_than) if older_than else settings.retention_days * DAY_S
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None
    store = cluster_store(settings)
    now = time.time()
    due = due_now(read_runs(store), now, age_s)
    if not due:
        out.print("nothing to prune")
        return
    storage = None if dry_run else make_storage(settings)
    for run in due:
        jobs = store.run_job_count(run.id)
        if storage is None:
            out.print(f"would prune run {run.id} ({run.name}): {jobs} job(s)")
            continue
        if to_archive([run]):  # not archived, or its jobs moved since
            archive_run(store, storage, run.id, now)
        uri = store.run_archive_uri(run.id)
        steps = list(prune_run(store, run.id))
        deleted = sum(step.jobs for step in steps)
        if steps[-1].run_gone:
            out.print(
                f"pruned run {run.id} ({run.name}): {deleted} job record(s); report at {uri}",
            )
        else:
            out.print(
                f"kept run {run.id} ({run.name}): {deleted} job record(s) pruned, "
                f"{len(steps[-1].kept)} still in use (in flight, or waiting for a bill)",
            )
