"""``seedq report``: one row per job of a run, as JSON lines, CSV or an HTML page."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cli.control import cluster_store
from seedq.report import FORMATS, render, report_rows
from seedq.settings import Settings, load_settings
from seedq.store import JobStore
from worker.control import require_run


def write_report(
    store: JobStore, settings: Settings, run_id: str, fmt: str, target: Path | None
) -> str:
    """Render the run's report; write it to ``target`` (or return it for stdout)."""
    info = require_run(store, run_id)
    rows = report_rows(store, run_id)
    storage = None
    if fmt == "html":
        from storage import make_storage

        storage = make_storage(settings)
    text = render(fmt, info, rows, storage)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", newline="")  # CSV rows end in CRLF
    return text


def report_command(
    run_id: str = typer.Argument(..., help="The run to report on."),
    fmt: str = typer.Option("jsonl", "--format", help=f"One of {', '.join(FORMATS)}."),
    out_file: Path | None = typer.Option(None, "--out", help="Write here (default: stdout)."),
) -> None:
    """Report a run: one row per job (status, output, generation, seconds, size, cost,
    timings, error); --format html makes one self-contained page with a gallery."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
    settings = load_settings()
    text = write_report(cluster_store(settings), settings, run_id, fmt, out_file)
    if out_file is None:
        sys.stdout.write(text)
    else:
        typer.echo(f"report written to {out_file}", err=True)
