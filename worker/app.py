"""The Celery app, ``celery -A worker ...``. Configured on first use from the settings,
never at import time (importing the package reads no environment).

A process of this app that lacks a setting it cannot work without refuses to start, in
one line and with exit status 2, instead of running on an in-memory broker or failing
every tick: every command needs ``SEEDQ_BROKER_URL`` (checked when Celery reads the
configuration, while it parses the command line), and a worker also needs
``SEEDQ_REDIS_URL`` and ``OXEN_API_KEY`` (checked on ``celeryd_init``, before the worker
connects or consumes anything).

Its workers stop in two stages (``worker.heartbeat``): the steps running finish (a
warm shutdown) and the broker connection closes, restoring every message received and
not started; then :class:`Worker` has the process hand over what is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import click
from celery import Celery, beat, platforms
from celery.apps.beat import Beat as CeleryBeat
from celery.apps.worker import Worker as CeleryWorker
from celery.signals import celeryd_init
from pydantic import ValidationError

from seedq.errors import ConfigError
from seedq.queueing import celery_config
from seedq.settings import PIPELINE_NEEDS, invalid_settings, load_settings, require
from worker.heartbeat import hand_over, install_heartbeat
from worker.observability import install_observability
from worker.ticker import install_ticker


class Refused(ConfigError, click.ClickException):
    """A setting this process cannot start without is missing or invalid.

    A ClickException, since Celery's command line is click: it shows one ``Error: ...``
    line and exits with :attr:`exit_code`, never a traceback."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)

    def __str__(self) -> str:
        return self.message


class Worker(CeleryWorker):  # type: ignore[misc]
    """``celery worker``, whose process hands over what it still holds once its
    consumer has shut down (warm or cold): only then is everything the broker could take
    back restored, so only then can it tell what was not (``worker.heartbeat``)."""

    def on_stopped(self) -> None:
        super().on_stopped()
        hand_over()


class Beat(CeleryBeat):  # type: ignore[misc]
    """``celery beat``, whose stop (SIGTERM, SIGINT) never builds the scheduler.

    Celery's handler closes ``service.scheduler``, built on first use: a signal landing
    while the main thread was still building it (opening the schedule file, just after
    ``beat: Starting...``) built a second scheduler on the same file inside the first,
    and beat exited 1 (``module 'dbm.dumb' has no attribute 'open'``: the signal had
    landed in the middle of importing it). Until the scheduler exists, a stop is only
    asked for: the main thread builds it, runs no tick and closes it, once."""

    def install_sync_handler(self, service: beat.Service) -> None:
        def _stop(signum: int, frame: Any) -> None:
            if service._is_shutdown.is_set():
                return  # a second signal must not break into the close the first began
            service.stop()
            if "scheduler" not in vars(service):
                return
            # As Celery does: close at once (the supervisor may follow with SIGKILL), and
            # leave the sleep between ticks, which may last minutes.
            service.sync()
            raise SystemExit()

        platforms.signals.update(SIGTERM=_stop, SIGINT=_stop)


class SeedqCelery(Celery):  # type: ignore[misc]
    def on_configure(self) -> None:
        with refusing():
            self.conf.update(celery_config(load_settings()))

    @cached_property
    def Worker(self) -> type[Worker]:
        return self.subclass_with_self(Worker)  # type: ignore[no-any-return]

    @cached_property
    def Beat(self) -> type[Beat]:
        return self.subclass_with_self(Beat)  # type: ignore[no-any-return]


@contextmanager
def refusing() -> Iterator[None]:
    """Turn a ConfigError, or settings pydantic rejects, into :class:`Refused`."""
    try:
        yield
    except click.ClickException:
        raise  # says itself in one line already (a schedule file's errors)
    except ConfigError as exc:
        raise Refused(str(exc)) from None
    except ValidationError as exc:
        raise Refused("; ".join(invalid_settings(exc))) from None


def _refuse_an_incomplete_worker(instance: Any = None, **_: Any) -> None:
    """On ``celeryd_init``: before the worker connects, starts its pool or consumes."""
    if getattr(instance, "app", None) is not app:
        return  # another app's worker in this process: not ours to judge
    try:
        with refusing():
            require(load_settings(), "a worker", *PIPELINE_NEEDS)
    except Refused as exc:
        # Celery's signals log what a handler raises and go on; only SystemExit stops
        # the worker, so the one line is printed here, as click prints it for the broker.
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None


def install_worker_steps(app: Any) -> None:
    """What every worker process runs beside its tasks: the tick, and the metrics server
    with the JSON log signals."""
    install_ticker(app)
    install_heartbeat(app)
    install_observability(app)


app = SeedqCelery("seedq", include=["worker.tasks"])
install_worker_steps(app)
celeryd_init.connect(_refuse_an_incomplete_worker, weak=False)
