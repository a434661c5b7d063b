"""``seedq validate`` and ``seedq submit``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.console import make_console
from cli.timed import print_timing, run_timing
from producer.errors import Problem, SubmitError
from producer.jobs import JobSpec
from producer.manifest import ReadOptions
from producer.plan import CheckResult, check
from producer.spool import Spool
from producer.submit import SubmitResult
from producer.timing import RunTiming
from provider.catalog import catalog_for
from seedq.catalog import ModelCatalog
from seedq.refs import max_output_key_bytes
from seedq.settings import Settings, load_settings
from seedq.store import Decision, JobStore

EXIT_INVALID = 2
MAX_SHOWN_PROBLEMS = 10_000

out = make_console()
err = make_console(stderr=True)


def parse_sets(sets: list[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SubmitError(f"--set takes FIELD=VALUE, got {item!r}")
        parsed[name.strip().lower()] = value
    return parsed


def read_options(settings: Settings, sets: list[str], model: str | None) -> ReadOptions:
    return ReadOptions(
        default_model=settings.model,
        sets=parse_sets(sets),
        model_override=model,
        allow_private_urls=settings.allow_private_urls,
        max_manifest_bytes=settings.max_manifest_bytes,
        input_root=settings.input_root,
        s3_allow=settings.input_s3_grants,
        max_yaml_manifest_bytes=settings.max_yaml_manifest_bytes,
        max_output_key_bytes=max_output_key_bytes(settings.output),
    )


def print_problems(problems: list[Problem]) -> None:
    for problem in problems[:MAX_SHOWN_PROBLEMS]:
        style = "yellow" if problem.warning else "red"
        err.print(str(problem), style=style)
    if len(problems) > MAX_SHOWN_PROBLEMS:
        err.print(f"... and {len(problems) - MAX_SHOWN_PROBLEMS} more", style="red")


def print_plan(result: CheckResult, catalog: ModelCatalog) -> None:
    plan = result.plan
    table = Table(title="Plan", title_justify="left")
    for col in ("resolution", "jobs", "output seconds", f"est. cost ({plan.currency})"):
        table.add_column(col, justify="right" if col != "resolution" else "left")
    for res, bucket in sorted(plan.by_resolution.items()):
        table.add_row(res, str(bucket.jobs), str(bucket.seconds), f"{bucket.cost:,.2f}")
    total = plan.total
    table.add_row("total", str(total.jobs), str(total.seconds), f"{total.cost:,.2f}", style="bold")
    out.print(table)
    if total.auto_jobs:
        out.print(
            f"{total.auto_jobs} job(s) with duration auto (-1) counted at "
            f"{plan.auto_estimate_s} s each (SEEDQ_AUTO_DURATION_ESTIMATE_S)."
        )
    print_prices(result, catalog)
    for note in catalog.notes:
        out.print(f"model {note}")


def print_prices(result: CheckResult, catalog: ModelCatalog) -> None:
    """Which published price each estimate used, and whose model object it came from."""
    plan = result.plan
    for key, used in sorted(plan.prices.items(), key=lambda kv: str(kv[0])):
        source = catalog.sources.get(key.model)
        audio = ", with audio" if key.generate_audio else ""
        origin = f", from {source.origin}" if source else ""
        out.print(
            f"price {key.model} {key.resolution}{audio}: {used.per_second:g} {plan.currency}/s "
            f"({used.field}{origin})",
        )


def unpriced(result: CheckResult) -> list[str]:
    """The (model, resolution) classes of the plan no published price covers: estimated
    at zero, which a budget could not hold."""
    return sorted(
        {
            f"{key.model} {key.resolution}"
            for key, used in result.plan.prices.items()
            if used.field == "none"
        }
    )


def check_priced(result: CheckResult, budget: float | None) -> None:
    """Say loudly when a class has no price; refuse a budget that could not hold it."""
    missing = unpriced(result)
    if not missing:
        return
    if budget is not None:
        raise SubmitError(
            "--budget cannot be held: the model object publishes no price for " + ", ".join(missing)
        )
    for item in missing:
        err.print(f"WARNING: no published price for {item}: estimated at 0", style="bold yellow")


def print_catalog_warnings(catalog: ModelCatalog) -> None:
    for warning in catalog.warnings:
        err.print(f"WARNING: {warning}", style="bold yellow")


def run_check(
    manifests: list[Path],
    settings: Settings,
    sets: list[str],
    model: str | None,
    offline: bool,
    spool: Spool | None = None,
) -> tuple[CheckResult, ModelCatalog, ReadOptions]:
    opts = read_options(settings, sets, model)
    catalog = catalog_for(settings, offline)
    result = check(
        manifests,
        opts,
        catalog,
        auto_estimate_s=settings.auto_duration_estimate_s,
        on_job=spool.write if spool else None,
    )
    print_problems(result.problems)
    print_catalog_warnings(catalog)
    return result, catalog, opts


def check_and_plan(
    manifests: list[Path],
    settings: Settings,
    sets: list[str],
    model: str | None,
    offline: bool,
    spool: Spool | None = None,
    *,
    budget: float | None,
) -> CheckResult:
    """Check the manifests and print every problem, then the plan; a manifest with an
    error ends the command (exit 2, nothing sent), as does a ``budget`` a class with no
    published price could break."""
    result, catalog, _ = run_check(manifests, settings, sets, model, offline, spool)
    if result.errors:
        err.print(f"{len(result.errors)} problem(s); nothing was sent.", style="bold red")
        raise typer.Exit(EXIT_INVALID)
    print_plan(result, catalog)
    check_priced(result, budget)
    return result


def submit_spooled(
    spool: Iterable[JobSpec],
    store: JobStore,
    app: Any,
    settings: Settings,
    manifests: list[Path],
    *,
    name: str | None,
    priority: int | None,
    budget: float | None,
    force: bool,
    run_id: str | None = None,
    notify: list[str] | None = None,
) -> SubmitResult:
    """Register the validated jobs of ``spool`` as one run (``run_id``: again into that
    run, resuming it) and start what the cap allows; ``notify``: its webhooks."""
    from producer.submit import submit
    from seedq.admission import admission_for
    from seedq.dispatch import celery_sender

    return submit(
        spool,
        store,
        celery_sender(app),
        admission=admission_for(store, settings),
        name=name or ", ".join(p.stem for p in manifests),
        manifests=[str(p) for p in manifests],
        priority=priority,
        budget=budget,
        force=force,
        run_id=run_id,
        notify=notify or (),
    )


def print_submitted(done: SubmitResult) -> None:
    counts = done.counts
    out.print(
        f"run {done.run_id} ({done.name}): {done.enqueued} job(s) enqueued, "
        f"{done.started} started now; the rest start as in-flight slots free up"
    )
    skipped = [
        (counts[Decision.DONE], "already delivered (use --force to redo)"),
        (counts[Decision.ACTIVE], "already in progress in another run"),
        (counts[Decision.CHANGED], "delivered earlier with other parameters (use --force to redo)"),
    ]
    for count, why in skipped:
        if count:
            out.print(f"  skipped {count}: {why}")


def validate_command(
    manifests: list[Path] = typer.Argument(..., help="CSV or YAML manifests.", show_default=False),
    sets: list[str] = typer.Option([], "--set", help="Default for a job field, FIELD=VALUE."),
    model: str | None = typer.Option(None, help="Model id for every job."),
    offline: bool = typer.Option(False, help="Use the shipped schema even when a key is set."),
) -> None:
    """Check manifests without sending anything; print every problem and the plan."""
    settings = load_settings()
    result = check_and_plan(manifests, settings, sets, model, offline, budget=None)
    out.print(f"valid: {result.plan.total.jobs} job(s)", style="green")


def submit_command(
    manifests: list[Path] = typer.Argument(..., help="CSV or YAML manifests.", show_default=False),
    name: str | None = typer.Option(None, help="A name for the run (default: manifest names)."),
    priority: int | None = typer.Option(None, help="Priority of every job, -1000..1000."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and plan; send nothing."),
    force: bool = typer.Option(False, help="Redo jobs already delivered (pays again)."),
    sets: list[str] = typer.Option([], "--set", help="Default for a job field, FIELD=VALUE."),
    model: str | None = typer.Option(None, help="Model id for every job."),
    offline: bool = typer.Option(False, help="Use the shipped schema even when a key is set."),
    budget: float | None = typer.Option(
        None, min=0, help="Spending cap of the run, in the pricing's currency."
    ),
    at: str | None = typer.Option(
        None, help="Start at this time: HH:MM (next occurrence, local time) or ISO date-time."
    ),
    window: str | None = typer.Option(
        None, help="Submit only inside this daily window, e.g. 22:00-06:00."
    ),
    tz: str = typer.Option("UTC", help="Time zone of --window (IANA name)."),
    notify: list[str] = typer.Option(
        [], "--notify", help="Webhook told when the run ends or stops (repeatable)."
    ),
) -> None:
    """Validate manifests, register a run and enqueue its jobs; prints the run id."""
    from worker.notify import run_notify_urls

    settings = load_settings()
    webhooks = run_notify_urls(notify, settings, allow_private=settings.allow_private_urls)
    if priority is not None and not -1000 <= priority <= 1000:
        raise SubmitError("--priority must be between -1000 and 1000")
    timing = run_timing(at, window, tz)
    if not dry_run and (not settings.broker_url or not settings.redis_url):
        raise SubmitError(
            "submit needs SEEDQ_BROKER_URL and SEEDQ_REDIS_URL (workers must see the run); "
            "for a self-contained run use `seedq run`"
        )
    with Spool() as spool:
        check_and_plan(manifests, settings, sets, model, offline, spool, budget=budget)
        if dry_run:
            out.print("dry run: nothing was sent.")
            return
        done = submit_to_cluster(
            spool,
            settings,
            manifests,
            timing,
            name=name,
            priority=priority,
            budget=budget,
            force=force,
            notify=webhooks,
        )
    print_submitted(done)
    print_timing(timing)
    out.print(done.run_id)


def submit_to_cluster(
    spool: Spool,
    settings: Settings,
    manifests: list[Path],
    timing: RunTiming,
    *,
    name: str | None,
    priority: int | None,
    budget: float | None,
    force: bool,
    notify: list[str] | None = None,
) -> SubmitResult:
    """Register the run in the cluster's store (with its start time and window) and
    start what the cap allows."""
    from producer.timing import TimedStore
    from seedq.queueing import make_celery, redis_client

    store = TimedStore(redis_client(settings), timing)
    return submit_spooled(
        spool,
        store,
        make_celery(settings),
        settings,
        manifests,
        name=name,
        priority=priority,
        budget=budget,
        force=force,
        notify=notify,
    )
