"""The ``seedq`` command line. Each command builds the settings, calls plain functions,
and turns the project's own errors into a clear message and an exit status:
0 success, 1 the work itself failed, 2 bad input or configuration."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from seedq.errors import SeedqError
from seedq.settings import invalid_settings
from simulator.cli import simulator_command

EXIT_BAD_INPUT = 2
F = TypeVar("F", bound=Callable[..., Any])

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


def _register() -> None:
    # Command modules import their heavy dependencies lazily, keeping `seedq --help` fast.
    from cli import produce, run, timed

    app.command("validate")(guarded(produce.validate_command))
    app.command("submit")(guarded(produce.submit_command))
    app.command("run")(guarded(run.run_command))
    app.command("status")(guarded(run.status_command))
    app.command("events")(guarded(run.events_command))
    app.command("schedules")(guarded(timed.schedules_command))

    from cli import audit, control, report

    app.command("runs")(guarded(control.runs_command))
    app.command("pause")(guarded(control.pause_command))
    app.command("resume")(guarded(control.resume_command))
    app.command("cancel")(guarded(control.cancel_command))
    app.command("retry")(guarded(control.retry_command))
    app.command("report")(guarded(report.report_command))
    app.command("audit")(guarded(audit.audit_command))


def guarded(func: F) -> F:
    """Run a command so that the project's own errors never show as a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SeedqError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except ValidationError as exc:
            for line in invalid_settings(exc):
                typer.secho(f"error: {line}", fg="red", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit, typer.TyperException):
            raise  # usage errors (BadParameter) print as such, with exit status 2
        except Exception as exc:
            if os.environ.get("SEEDQ_DEBUG"):
                raise
            typer.secho(
                f"internal error (a bug in seedq, please report it): {type(exc).__name__}: {exc}\n"
                "set SEEDQ_DEBUG=1 to see the traceback",
                fg="red",
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


_register()


def main() -> None:
    app(prog_name="seedq")


if __name__ == "__main__":  # pragma: no cover
    main()
