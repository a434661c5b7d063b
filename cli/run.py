"""``seedq run``: submit manifests and follow the run to its end (in this process when
no cluster is configured)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.console import make_console
from cli.local_run import (
    SkipCount,
    check_local_output,
    finish_earlier_runs,
    interrupted_by_sigterm,
    refuse_unreachable_inputs,
    resumable_run,
    skip_delivered,
    state_root,
)
from cli.produce import check_and_plan, print_submitted, submit_spooled
from cli.progress import breakdown, budget_line, follow, stuck_line
from producer.jobs import JobSpec
from producer.spool import Spool
from producer.submit import SubmitResult
from seedq.admission import admission_for
from seedq.billing import billing_status
from seedq.errors import ConfigError
from seedq.queueing import make_celery, redis_client
from seedq.settings import Settings, load_settings
from seedq.store import Decision, JobStore, RunInfo

out = make_console()
err = make_console(stderr=True)
MAX_ROWS = 40
BILL_WAIT_S = 10.0  # at most, after the last delivery: a pass asks every tick
NOTIFY_WAIT_S = 30.0  # at most, for an embedded run's webhooks (a few retries)


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
    demo: bool = typer.Option(
        False,
        "--demo",
        help="Run the embedded demo on the built-in simulator whatever is configured, "
        "even with OXEN_API_KEY set: nothing is paid.",
    ),
    notify: list[str] = typer.Option(
        [], "--notify", help="Webhook told when the run ends or stops (repeatable)."
    ),
) -> None:
    """Submit manifests and follow the run to its end; exit 0 only if every job was delivered.

    With no SEEDQ_BROKER_URL/SEEDQ_REDIS_URL the whole pipeline runs in this process:
    with OXEN_API_KEY set, against the provider (SEEDQ_PROVIDER_URL), its state kept in a
    private redis-server under DIR/.seedq so that running it again resumes, never paying
    twice; without a key, a demo against the built-in simulator (no cost).
    """
    settings = load_settings(**DEMO_IGNORES) if demo else load_settings()
    if out_dir is not None:
        settings = settings.model_copy(update={"output": str(out_dir)})
    opts = RunOptions(
        manifests,
        name=name,
        priority=priority,
        force=force,
        sets=sets,
        model=model,
        timeout_s=timeout,
        budget=budget,
        report=report,
        demo=demo,
        notify=notify,
    )
    raise typer.Exit(run_manifests(settings, opts))


# What the demo never uses: a compose stack's .env beside it, placeholders and all (which
# every real process refuses), must not stop it.
DEMO_IGNORES: dict[str, object] = {"oxen_api_key": None, "flower_basic_auth": None}


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What ``seedq run`` was asked for, beside the settings."""

    manifests: list[Path]
    name: str | None = None
    priority: int | None = None
    force: bool = False
    sets: list[str] = dataclasses.field(default_factory=list)
    model: str | None = None
    timeout_s: float | None = None
    budget: float | None = None
    report: Path | None = None
    demo: bool = False
    notify: list[str] = dataclasses.field(default_factory=list)


def run_manifests(settings: Settings, opts: RunOptions) -> int:
    """Check, submit and follow one run to its end; the exit status: 0 only if every job
    was delivered and none was left to another run."""
    embedded = opts.demo or embedded_mode(settings)
    paid_local = embedded and not opts.demo and settings.oxen_api_key is not None
    if paid_local:
        check_local_output(settings)
    from worker.notify import run_notify_urls

    # The demo's workers may reach loopback (its simulator is there): so may its webhooks.
    allow_private = settings.allow_private_urls or (embedded and not paid_local)
    webhooks = run_notify_urls(opts.notify, settings, allow_private=allow_private)
    with ExitStack() as stack:
        stack.enter_context(interrupted_by_sigterm())
        spool = stack.enter_context(Spool())
        offline = embedded and not paid_local
        check_and_plan(
            opts.manifests, settings, opts.sets, opts.model, offline, spool, budget=opts.budget
        )
        target = open_target(
            stack, settings, opts.manifests, spool, demo=opts.demo, force=opts.force
        )
        done, elsewhere = submit_to(target, settings, opts, webhooks)
        info = follow_to_end(
            target.store, done.run_id, opts.timeout_s, paid_local=paid_local, settings=settings
        )
        if embedded:
            wait_for_webhooks(target.store, done.run_id, webhooks, settings)
        summarize(target.store, info, settings, resume_hint=resume_hint(embedded, paid_local))
        if opts.report is not None:
            # Before the stack closes: an embedded run's state ends with this process.
            from cli.report import write_report

            write_report(target.store, settings, done.run_id, "html", opts.report)
            out.print(f"report written to {opts.report}")
    all_delivered = info.counts.get("delivered", 0) == info.total
    return 0 if all_delivered and not elsewhere else 1


def submit_to(
    target: Target, settings: Settings, opts: RunOptions, webhooks: list[str] | None = None
) -> tuple[SubmitResult, int]:
    """Register the run's jobs where ``target`` says and print what was done; also the
    number of jobs left out as still moving in another run (then the run cannot end
    with every job delivered)."""
    done = submit_spooled(
        target.jobs,
        target.store,
        target.app,
        settings,
        opts.manifests,
        name=opts.name,
        priority=opts.priority,
        budget=opts.budget,
        force=opts.force,
        run_id=target.resume_id,
        notify=webhooks,
    )
    done.counts[Decision.DONE] += target.skipped.n
    # Resuming its own run, a job still moving is this run's, not another's.
    elsewhere = 0 if target.resume_id else done.counts[Decision.ACTIVE]
    if target.resume_id:
        done.counts[Decision.ACTIVE] = 0
    print_submitted(done)
    return done, elsewhere


def follow_to_end(
    store: JobStore,
    run_id: str,
    timeout_s: float | None,
    *,
    paid_local: bool,
    settings: Settings | None = None,
) -> RunInfo:
    """Follow the run to its end; a paid local run then waits for the paid generations
    of earlier runs in its folder too. Then a moment for the bills.

    A run its budget paused ends only once the jobs admitted before the pause have
    delivered (they fit inside the cap): they hold their slots until then."""
    holding = admission_for(store, settings).holding
    try:
        info = follow(store, run_id, out, timeout_s=timeout_s, holding=holding)
        if paid_local:
            finish_earlier_runs(store, run_id, timeout_s=timeout_s)
        wait_for_bills(store, run_id)
    except KeyboardInterrupt:
        if paid_local:
            err.print("stopping; the same command resumes this run, and pays for nothing twice")
        raise
    return info


@dataclasses.dataclass
class Target:
    """Where a run goes: its store and Celery app, the jobs to register (delivered ones
    left out), and the run it resumes, if any."""

    store: JobStore
    app: Any
    jobs: Iterable[JobSpec]
    resume_id: str | None = None
    skipped: SkipCount = dataclasses.field(default_factory=SkipCount)


def open_target(
    stack: ExitStack,
    settings: Settings,
    manifests: list[Path],
    spool: Spool,
    *,
    demo: bool,
    force: bool,
) -> Target:
    """The cluster, or a stack in this process (entered on ``stack``): the paid one with
    a key, the demo without one or with ``--demo``."""
    if not demo and not embedded_mode(settings):
        return Target(JobStore(redis_client(settings)), make_celery(settings), spool)
    from cli.embedded import embedded_stack, local_stack

    if demo or settings.oxen_api_key is None:
        why = "--demo" if demo else "no OXEN_API_KEY"
        out.print(f"{why}: demo run on the local simulator, nothing is paid")
        out.print("embedded run: in-process worker, in-memory broker, provider simulator")
        emb = stack.enter_context(embedded_stack(settings))
        return Target(emb.store, emb.app, spool)
    refuse_unreachable_inputs(settings, spool)
    root = state_root(settings)
    emb = stack.enter_context(local_stack(settings, root))
    out.print(
        f"paid run on {emb.provider_url}: state kept in "
        f"{root.resolve() / '.seedq'} (a private redis-server)"
    )
    target = Target(emb.store, emb.app, spool, resumable_run(emb.store, manifests))
    if target.resume_id is not None:
        out.print(f"resuming run {target.resume_id} in this folder")
        held = retry_failed(emb.store, emb.app, settings, target.resume_id)
        target.jobs = (job for job in target.jobs if job.id not in held)
    if emb.redriven:
        out.print(
            f"{emb.redriven} job(s) were in flight when the last run stopped: picked "
            "up where they were (an unanswered enqueue is looked up, never resent)"
        )
    if not force:
        target.jobs = skip_delivered(target.jobs, settings, emb.provider_url, target.skipped)
    return target


def retry_failed(store: JobStore, app: Any, settings: Settings, run_id: str) -> set[str]:
    """Re-drive the resumed run's failed jobs without paying twice (``seedq retry``'s
    rules); the ids still failed, which are left out of registration and listed."""
    from cli.retrying import retry_for_resume
    from provider.client import OxenClient
    from seedq.admission import admission_for
    from seedq.dispatch import celery_sender

    with OxenClient.from_settings(settings) as provider:
        done, held = retry_for_resume(
            store, admission_for(store, settings), provider, celery_sender(app), run_id
        )
    again = {k: v for k, v in done.counts.items() if v and k != "sent now"}
    if again:
        out.print("failed jobs of the last run: " + ", ".join(f"{v} {k}" for k, v in again.items()))
    for line in done.listed:
        out.print(f"  {line}")
    if held:
        out.print(
            f"{len(held)} failed job(s) left as they are (an operator decides: "
            f"`seedq retry {run_id} --include-ambiguous` with SEEDQ_REDIS_URL set)"
        )
    return held


def wait_for_webhooks(
    store: JobStore, run_id: str, webhooks: list[str], settings: Settings
) -> None:
    """In embedded mode the notifier's thread ends with this process: give it a moment to
    tell the run's webhooks (the tick claims the event within a second), and say so."""
    from worker.notify import wait_for_notice

    outcome = wait_for_notice(store, run_id, webhooks, settings.notify_url, timeout_s=NOTIFY_WAIT_S)
    if outcome == "sent":
        out.print(f"notified {len(webhooks)} webhook(s)")
    elif outcome is not None:
        err.print(f"notification not delivered ({outcome or 'not sent'}); see the log above")


def wait_for_bills(store: JobStore, run_id: str, *, timeout_s: float = BILL_WAIT_S) -> None:
    """Give the workers' billing pass a moment to ask for the bills of the clips just
    delivered, so the summary shows them; a bill not charged yet is left pending (the
    workers keep asking; ``seedq status`` and ``seedq report`` show it later)."""
    ledger = store.billing
    deadline = time.monotonic() + timeout_s
    while ledger.asking_now(run_id, time.time()) and time.monotonic() < deadline:
        time.sleep(0.2)


def resume_hint(embedded: bool, paid_local: bool) -> str | None:
    """How more budget reaches a run paused by it, here: None for the demo, whose state
    ends with the process."""
    if not embedded:
        return "`seedq resume RUN --budget AMOUNT` raises the cap"
    if paid_local:
        return "run the same command again with a higher --budget"
    return None


def summarize(
    store: JobStore, info: RunInfo, settings: Settings, *, resume_hint: str | None = None
) -> None:
    table = Table(title=f"Run {info.id}: {breakdown(info)}", title_justify="left")
    table.add_column("job", overflow="fold")
    table.add_column("state")
    table.add_column("output key / reason", overflow="fold")
    table.add_column("estimated", justify="right")
    table.add_column("billed", justify="right")
    for job_id in store.run_job_ids(info.id, 0, MAX_ROWS - 1):
        job = store.job(job_id)
        key = json.loads(job["spec"]).get("output_key", "") if job.get("spec") else ""
        where = key if job.get("output_uri") else job.get("error") or job.get("last_error", "")
        if job.get("stuck_retries") and job.get("output_uri"):
            where += " (generation stuck: killed and retried once)"
        warnings = json.loads(job.get("warnings") or "[]")
        if warnings:
            where += "\nwarning: " + "\nwarning: ".join(warnings)
        billed = job.get("billed_cost") or (billing_status(job) if job.get("generated_at") else "")
        table.add_row(job_id, job.get("state", "?"), where, job.get("cost", ""), billed)
    out.print(table)
    money = store.billing.run(info.id)
    out.print(
        f"estimated {money.estimated:g}, billed {money.billed_text()}"
        + (f"; {money.warned} clip(s) delivered with warnings" if money.warned else "")
    )
    if info.total > MAX_ROWS:
        out.print(f"... {info.total - MAX_ROWS} more job(s): `seedq report {info.id}`")
    if (line := stuck_line(info)) is not None:
        out.print(line)
    if info.status == "paused":
        err.print(f"run paused: {store.run_reason(info.id)}", style="bold red")
    hint = resume_hint.replace("RUN", info.id) if resume_hint else None
    budget = admission_for(store, settings).budgets.state(info.id)
    if (line := budget_line(info, budget, hint)) is not None:
        out.print(line)
    where = settings.output if settings.output_is_s3 else str(Path(settings.output).resolve())
    out.print(f"videos and their .json sidecars are in {where}")
