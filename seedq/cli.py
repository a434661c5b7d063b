"""The ``seedq`` command line. Each command builds the settings, calls plain functions,
and turns the project's own errors into a clear message and an exit status."""

from __future__ import annotations

import typer

from simulator.cli import simulator_command

app = typer.Typer(
    name="seedq",
    help="Turn spreadsheets of (image, prompt) pairs into videos, overnight.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("simulator")(simulator_command)


@app.callback()
def _root() -> None:
    """Turn spreadsheets of (image, prompt) pairs into videos, overnight."""


def main() -> None:
    app()
