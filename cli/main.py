"""The ``seedq`` command line. Each command builds the settings, calls plain functions,
and turns the project's own errors into one clear line and an exit status that says
what to do next (README.md, "Exit codes"): 0 everything succeeded, 1 some work failed,
2 bad input, usage or configuration, 3 a service (Redis, the broker, the provider) could
not be reached or did not answer, 4 a bug in seedq, 130 interrupted. :func:`exit_status`
is the one decision; a command that ends with work failed exits 1 itself."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from seedq.errors import JobFailed, SeedqError, TransientError
from seedq.queueing import connection_error
from seedq.settings import invalid_settings
from simulator.cli import simulator_command

EXIT_OK = 0
EXIT_WORK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_BUG = 4
EXIT_INTERRUPTED = 130
EPILOG = (
    "Exit status: 0 everything succeeded; 1 some work failed (a job, a finding); "
    "2 bad input, usage or configuration; 3 a service (Redis, the broker, the provider) "
    "could not be reached; 4 a bug in seedq."
)
F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="seedq",
    help="Turn spreadsheets of (image, prompt) pairs into videos, overnight.",
    epilog=EPILOG,
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
    from cli import events, exporter, produce, run, status, timed

    app.command("validate")(guarded(produce.validate_command))
    app.command("submit")(guarded(produce.submit_command))
    app.command("run")(guarded(run.run_command))
    app.command("status")(guarded(status.status_command))
    app.command("events")(guarded(events.events_command))
    app.command("exporter")(guarded(exporter.exporter_command))
    app.command("schedules")(guarded(timed.schedules_command))

    from cli import audit, control, report

    app.command("runs")(guarded(control.runs_command))
    app.command("pause")(guarded(control.pause_command))
    app.command("resume")(guarded(control.resume_command))
    app.command("cancel")(guarded(control.cancel_command))
    app.command("retry")(guarded(control.retry_command))
    app.command("report")(guarded(report.report_command))
    app.command("audit")(guarded(audit.audit_command))
    from cli.prune import prune_command  # retention: archive, then prune ended runs

    app.command("prune")(guarded(prune_command))


def exit_status(exc: SeedqError) -> int:
    """The exit status of a command the project's own ``exc`` ended, by what to do next:
    wait and try again (3), fix the input or the settings (2), or look at the work (1)."""
    if isinstance(exc, TransientError):
        return EXIT_UNREACHABLE
    if isinstance(exc, JobFailed):
        return EXIT_WORK_FAILED
    # ConfigError, the producer's bad input, RunFatal (the key or the account, which
    # only an operator fixes), and any other error of the tree.
    return EXIT_BAD_INPUT


def guarded(func: F) -> F:
    """Run a command so that no error shows as a traceback: the project's own errors, a
    connection refused or dropped, invalid settings each end it with one line and
    :func:`exit_status`; only an unexpected exception is called a bug (with SEEDQ_DEBUG=1
    it is raised, traceback and all)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SeedqError as exc:
            _fail(_said(exc), exit_status(exc))
        except ValidationError as exc:
            for line in invalid_settings(exc):
                typer.secho(f"error: {line}", fg="red", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, SystemExit, typer.TyperException):
            raise  # usage errors (BadParameter) print as such, with exit status 2
        except Exception as exc:
            said = connection_error(exc)
            if said is not None:
                _fail(str(said), exit_status(said))
            if os.environ.get("SEEDQ_DEBUG"):
                raise
            typer.secho(
                f"internal error (a bug in seedq, please report it): {type(exc).__name__}: {exc}\n"
                "set SEEDQ_DEBUG=1 to see the traceback",
                fg="red",
                err=True,
            )
            raise typer.Exit(EXIT_BUG) from None

    return wrapper  # type: ignore[return-value]


def _said(exc: SeedqError) -> str:
    """The one line for ``exc``: a service that did not answer is named, with its setting
    (the provider client's own messages say what failed, not where). Imported here: the
    packages' __init__ import their clients, which `seedq --help` need not load."""
    from provider.errors import TransientProviderError
    from storage.errors import StorageUnavailable

    if isinstance(exc, TransientProviderError):
        return f"the provider is unavailable (SEEDQ_PROVIDER_URL): {exc}"
    if isinstance(exc, StorageUnavailable):
        return f"the output storage is unavailable (SEEDQ_OUTPUT): {exc}"
    return str(exc)


def _fail(message: str, status: int) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(status) from None


_register()


def main() -> None:
    app(prog_name="seedq")


if __name__ == "__main__":  # pragma: no cover
    main()
