"""``seedq audit RUN [--repair] [--verify]``: compare the job store, the provider's
succeeded generations and billed costs, and the stored objects; report what disagrees
(jsonl rows of a ``billed_mismatch`` carry ``recorded_billed`` and ``provider_billed``)
and, with ``--repair``, deliver what was paid for and is missing. The decisions are in
:mod:`worker.audit_rules` (which generation is whose in :mod:`worker.ownership`), the
reading and repairing in :mod:`worker.auditor`.

Exit status: 0 nothing found (or everything found was repaired), 1 findings remain,
2 bad input (unknown run, missing settings), 3 Redis or the provider unreachable
(README.md, "Exit codes")."""

from __future__ import annotations

import json
import sys
from enum import StrEnum

import typer
from rich.table import Table
from rich.text import Text

from cli.console import make_console
from cli.control import cluster_store
from seedq.settings import load_settings


class Format(StrEnum):
    TABLE = "table"
    JSONL = "jsonl"


EXIT_FINDINGS = 1

out = make_console()
err = make_console(stderr=True)


def audit_command(
    run_id: str = typer.Argument(..., help="The run to audit."),
    repair: bool = typer.Option(
        False, "--repair", help="Deliver paid generations not delivered, and missing outputs."
    ),
    verify: bool = typer.Option(
        False, "--verify", help="Also download each stored video and decode it (PyAV)."
    ),
    fmt: Format = typer.Option(Format.TABLE, "--format", help="table, or jsonl for machines."),
) -> None:
    """Find generations paid for but not delivered, missing or invalid outputs and
    duplicates; --repair delivers the orphans, never enqueueing anything new."""
    from worker.auditor import audit_run
    from worker.runtime import build_runtime

    settings = load_settings()
    cluster_store(settings)  # a clear ConfigError without SEEDQ_REDIS_URL
    rt = build_runtime(settings)
    try:
        done = audit_run(rt, run_id, fix=repair, verify=verify)
    finally:
        rt.provider.close()
    rows = done.rows(with_repairs=repair)
    if fmt is Format.JSONL:
        for row in rows:
            sys.stdout.write(json.dumps(row, sort_keys=True) + "\n")
    else:
        out.print(_table(run_id, rows, repair))
    summary = f"{len(done.found)} finding(s)"
    if repair:
        summary += f", {sum(r.ok for r in done.repaired)} repaired, {len(done.remaining)} remain"
    err.print(summary)
    if done.remaining:
        raise typer.Exit(EXIT_FINDINGS)


def _table(run_id: str, rows: list[dict[str, str | bool | float]], repair: bool) -> Table:
    table = Table(title=f"Audit of {run_id}", title_justify="left")
    columns = ["kind", "job", "generation", "reason", "repair"] + (["result"] if repair else [])
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        job = row["job_id"] or "(run)"  # a run-wide finding (billed_mismatch)
        cells = [row["kind"], job, row["generation_id"], row["reason"], row["repair"]]
        if repair:
            mark = "ok" if row["repaired"] else "not repaired"
            cells.append(f"{mark}: {row['detail']}")
        table.add_row(*(Text(str(c)) for c in cells))  # reasons are text, not markup
    if not rows:
        table.caption = "no findings: every paid generation is delivered and every output holds"
    return table
