"""``seedq run``, ``seedq status`` and ``seedq events``."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from producer.errors import SubmitError
from producer.spool import Spool
from seedq.commands.produce import (
    EXIT_INVALID,
    print_plan,
    print_submitted,
    run_check,
    submit_spooled,
)
from seedq.commands.progress import breakdown, follow, runs_table, stuck_line
from seedq.errors import ConfigError
from seedq.queueing import make_celery, redis_client
from seedq.settings import Settings, load_settings
from seedq.store import Decision, JobStore, RunInfo

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
MAX_ROWS = 40


def embedded_mode(settings: Settings) -> bool:
    if bool(settings.broker_url) != bool(settings.redis_url):
        raise ConfigError(
            "set both SEEDQ_BROKER_URL and SEEDQ_REDIS_URL (a cluster), or neither (embedded run)"
        )
    return settings.broker_url is None


def run_command(
    manifests: list[Path] = typer.Argument(..., help="CSV or YAML manifests.", show_default=False),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Output directory (sets SEEDQ_OUTPUT)."
    ),
    name: str | None = typer.Option(None, help="A name for the run."),
    priority: int | None = typer.Option(None, help="Priority of every job, -1000..1000."),
    force: bool = typer.Option(False, help="Redo jobs already delivered (pays again)."),
    sets: list[str] = typer.Option([], "--set", help="Default for a job field, FIELD=VALUE."),
    model: str | None = typer.Option(None, help="Model id for every job."),
    timeout: float | None = typer.Option(None, help="Stop following after this many seconds."),
    budget: float | None = typer.Option(
        None, min=0, help="Spending cap of the run, in the pricing's currency."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write the run's HTML report here at the end."
    ),
) -> None:
    """Submit manifests and follow the run to its end; exit 0 only if every job was delivered.

    With no SEEDQ_BROKER_URL/SEEDQ_REDIS_URL the whole pipeline runs in this process
    against the built-in provider simulator (no services, no key, no cost).
    """
    settings = load_settings()
    if out_dir is not None:
        settings = settings.model_copy(update={"output": str(out_dir)})
    embedded = embedded_mode(settings)
    with ExitStack() as stack:
        spool = stack.enter_context(Spool())
        result, catalog, _ = run_check(
            manifests, settings, sets, model, offline=embedded, spool=spool
        )
        if result.errors:
            err.print(f"{len(result.errors)} problem(s); nothing was sent.", style="bold red")
            raise typer.Exit(EXIT_INVALID)
        print_plan(result, catalog)
        if embedded:
            from seedq.embedded import embedded_stack

            out.print("embedded run: in-process worker, in-memory broker, provider simulator")
            emb = stack.enter_context(embedded_stack(settings))
            store, app = emb.store, emb.app
        else:
            store, app = JobStore(redis_client(settings)), make_celery(settings)
        done = submit_spooled(
            spool,
            store,
            app,
            settings,
            manifests,
            name=name,
            priority=priority,
            budget=budget,
            force=force,
        )
        print_submitted(done)
        info = follow(store, done.run_id, out, timeout_s=timeout)
        summarize(store, info, settings)
        if report is not None:
            # Before the stack closes: an embedded run's state ends with this process.
            from seedq.commands.report import write_report

            write_report(store, settings, done.run_id, "html", report)
            out.print(f"report written to {report}")
    all_delivered = info.counts.get("delivered", 0) == info.total
    raise typer.Exit(0 if all_delivered and not done.counts[Decision.ACTIVE] else 1)


def summarize(store: JobStore, info: RunInfo, settings: Settings) -> None:
    table = Table(title=f"Run {info.id}: {breakdown(info)}", title_justify="left")
    table.add_column("job", overflow="fold")
    table.add_column("state")
    table.add_column("output key / reason", overflow="fold")
    table.add_column("cost", justify="right")
    for job_id in store.run_job_ids(info.id, 0, MAX_ROWS - 1):
        job = store.job(job_id)
        key = json.loads(job["spec"]).get("output_key", "") if job.get("spec") else ""
        where = key if job.get("output_uri") else job.get("error") or job.get("last_error", "")
        if job.get("stuck_retries") and job.get("output_uri"):
            where += " (generation stuck: killed and retried once)"
        table.add_row(job_id, job.get("state", "?"), where, job.get("cost", ""))
    out.print(table)
    if info.total > MAX_ROWS:
        out.print(f"... {info.total - MAX_ROWS} more job(s): `seedq report {info.id}`")
    if (line := stuck_line(info)) is not None:
        out.print(line)
    if info.status == "paused":
        reason = store.redis.hget(f"seedq:run:{info.id}", "reason")
        err.print(
            f"run paused: {reason.decode() if isinstance(reason, bytes) else reason}",
            style="bold red",
        )
    where = settings.output if settings.output_is_s3 else str(Path(settings.output).resolve())
    out.print(f"videos and their .json sidecars are in {where}")


def status_command(
    run_id: str | None = typer.Argument(None, help="One run (default: the latest runs)."),
    watch: bool = typer.Option(False, "--watch", help="Keep the display live."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show runs and their progress."""
    settings = load_settings()
    if settings.redis_url is None:
        raise ConfigError("SEEDQ_REDIS_URL is not set: only a cluster keeps runs to show")
    store = JobStore(redis_client(settings))
    if run_id is not None and store.run(run_id) is None:
        raise SubmitError(f"no run {run_id!r}")
    if watch and run_id is not None:
        follow(store, run_id, out, timeout_s=None)
        return
    while True:
        runs = [store.run(run_id)] if run_id else store.runs(limit=20)
        found = [r for r in runs if r is not None]
        if as_json:
            out.print_json(json.dumps([dataclasses.asdict(r) for r in found]))
        else:
            out.print(runs_table(found))
            for line in filter(None, map(stuck_line, found)):
                out.print(line)
        if not watch:
            return
        time.sleep(2)
        out.clear()


def events_command() -> None:
    """Listen to the provider's completion events and hand finished videos to delivery."""
    from worker.events import listen
    from worker.runtime import get_runtime

    settings = load_settings()
    if embedded_mode(settings):
        raise ConfigError("seedq events needs SEEDQ_BROKER_URL and SEEDQ_REDIS_URL")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    app = make_celery(settings)
    err.print("listening for completion events (Ctrl-C stops)")
    handled = listen(get_runtime(), app, stop)
    err.print(f"stopped; {handled} completion(s) handed to delivery")
