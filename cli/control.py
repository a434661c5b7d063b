"""``seedq runs``, ``pause``, ``resume``, ``cancel`` and ``retry``: run control on a
cluster. The logic is in :mod:`worker.control`; these build its clients from the
settings and print what happened.

Exit status: 0 done, 1 some of the run's jobs were left as they were (a cancel the
provider did not take, a failed job not retried), 2 bad input (an unknown run, missing
settings), 3 Redis, the broker or the provider unreachable (README.md, "Exit codes")."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cli.console import make_console
from cli.progress import breakdown, finished
from seedq.admission import admission_for
from seedq.dispatch import Sender, celery_sender
from seedq.errors import ConfigError
from seedq.queueing import make_celery, redis_client
from seedq.settings import Settings, load_settings
from seedq.store import JobStore, RunInfo
from worker.control import CommandResult

out = make_console()
EXIT_WORK_LEFT = 1


def cluster_store(settings: Settings) -> JobStore:
    if settings.redis_url is None:
        raise ConfigError("SEEDQ_REDIS_URL is not set: only a cluster keeps runs to control")
    return JobStore(redis_client(settings))


def _sender(settings: Settings) -> Sender:
    if settings.broker_url is None:
        raise ConfigError("SEEDQ_BROKER_URL is not set: messages need the cluster's broker")
    return celery_sender(make_celery(settings))


def _print(title: str, done: CommandResult) -> None:
    """Print what the command did; exit 1 when it left some of its jobs undone."""
    out.print(Text.assemble((title, "bold"), " ", done.run_id))
    for what, count in done.counts.items():
        out.print(f"  {count:>6}  {what}")
    if done.provider_calls:
        out.print(f"  {done.provider_calls:>6}  provider call(s)")
    for line in done.listed:
        out.print(f"  - {line}")
    if done.left:  # jobs it could not act on (CommandResult.leave)
        raise typer.Exit(EXIT_WORK_LEFT)


def progress_table(runs: list[RunInfo]) -> Table:
    """The runs, each with a progress bar (finished of total) and its states."""
    table = Table(title="Runs", title_justify="left")
    for col in ("run", "name", "status", "progress", "done", "jobs", "states"):
        table.add_column(col)
    for info in runs:
        done = finished(info)
        bar = ProgressBar(total=max(info.total, 1), completed=done, width=20)
        table.add_row(
            info.id, info.name, info.shown_status, bar, str(done), str(info.total), breakdown(info)
        )
    return table


def runs_command(
    limit: int = typer.Option(20, "--limit", min=1, help="How many of the latest runs."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the latest runs with their progress."""
    store = cluster_store(load_settings())
    found = store.runs(limit=limit)
    if as_json:
        rows = [asdict(r) | {"finished": finished(r)} for r in found]
        out.print_json(json.dumps(rows))
    else:
        out.print(progress_table(found))


def pause_command(run_id: str = typer.Argument(..., help="The run to pause.")) -> None:
    """Stop submitting a run's jobs; generations already started finish and deliver."""
    from worker.control import pause

    _print("paused", pause(cluster_store(load_settings()), run_id))


def resume_command(
    run_id: str = typer.Argument(..., help="The run to resume."),
    budget: float | None = typer.Option(
        None,
        min=0,
        help="Set the run's spending cap first (raise it to go on past a budget pause).",
    ),
) -> None:
    """Resume a paused run: its waiting jobs are admitted again."""
    from worker.control import resume

    settings = load_settings()
    store = cluster_store(settings)
    admission = admission_for(store, settings)
    done = resume(store, admission, _sender(settings), run_id, budget=budget)
    _print("resumed", done)


def cancel_command(run_id: str = typer.Argument(..., help="The run to cancel.")) -> None:
    """Cancel a run: waiting jobs never start, generations in flight are cancelled at the
    provider; generated ones are paid for already and still deliver."""
    from provider.client import OxenClient
    from worker.control import cancel

    settings = load_settings()
    store = cluster_store(settings)
    with OxenClient.from_settings(settings) as provider:
        done = cancel(store, provider, run_id, settle_s=settings.http_timeout_s + 1.0)
    _print("cancelled", done)


def retry_command(
    run_id: str = typer.Argument(..., help="The run whose failed jobs to re-drive."),
    include_ambiguous: bool = typer.Option(
        False,
        "--include-ambiguous",
        help="Also jobs that need an operator (several generations matched): may pay twice.",
    ),
) -> None:
    """Re-drive a run's failed jobs: failed deliveries deliver again (never paid twice),
    jobs that never generated get a fresh attempt. Delivered jobs are never touched."""
    from cli.retrying import retry
    from provider.client import OxenClient

    settings = load_settings()
    store = cluster_store(settings)
    admission = admission_for(store, settings)
    with OxenClient.from_settings(settings) as provider:
        done = retry(
            store,
            admission,
            provider,
            _sender(settings),
            run_id,
            include_ambiguous=include_ambiguous,
        )
    _print("retried", done)
