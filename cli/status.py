"""``seedq status``: runs and their progress, once or live."""

from __future__ import annotations

import dataclasses
import json
import time

import typer

from cli.console import make_console
from cli.progress import follow, runs_table, stuck_line
from producer.errors import SubmitError
from seedq.admission import admission_for
from seedq.errors import ConfigError
from seedq.queueing import redis_client
from seedq.settings import load_settings
from seedq.store import JobStore

out = make_console()
err = make_console(stderr=True)


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
        follow(store, run_id, out, timeout_s=None, holding=admission_for(store, settings).holding)
        return
    while True:
        runs = [store.run(run_id)] if run_id else store.runs(limit=20)
        found = [r for r in runs if r is not None]
        ledger = store.billing
        money = {r.id: ledger.run(r.id) for r in found}
        if as_json:
            rows = [
                dataclasses.asdict(r)
                | {"billing": dataclasses.asdict(money[r.id])}
                | {"billing_pending_jobs": money[r.id].pending_jobs}
                for r in found
            ]
            out.print_json(json.dumps(rows))
        else:
            out.print(runs_table(found, money))
            for line in filter(None, map(stuck_line, found)):
                out.print(line)
        if not watch:
            return
        time.sleep(2)
        out.clear()
