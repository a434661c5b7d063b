"""What ``celery -A worker`` runs beside its tasks, each installed by the function that
says so: the tick (``install_ticker``), the heartbeat (``install_heartbeat``) and metrics
with JSON logs (``install_observability``), all through ``install_worker_steps``; and
how its worker and its beat stop."""

from __future__ import annotations

import importlib
import shelve
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.apps.worker import Worker as CeleryWorker
from celery.beat import PersistentScheduler, Service
from celery.signals import worker_shutting_down

from worker.app import Beat, app, install_worker_steps
from worker.heartbeat import HeartbeatStep
from worker.observability import MetricsServer
from worker.ticker import Ticker, install_ticker


def test_the_worker_app_ticks_and_serves_metrics() -> None:
    assert Ticker in app.steps["worker"]
    assert HeartbeatStep in app.steps["worker"]
    assert MetricsServer in app.steps["worker"]


def test_install_ticker_installs_the_ticker_only() -> None:
    bare = Celery("bare")
    install_ticker(bare)
    assert Ticker in bare.steps["worker"]
    assert MetricsServer not in bare.steps["worker"]


def test_installing_the_worker_steps_twice_adds_each_once() -> None:
    bare = Celery("bare")
    install_worker_steps(bare)
    install_worker_steps(bare)
    assert bare.steps["worker"] == {Ticker, HeartbeatStep, MetricsServer}


def test_a_worker_hands_over_what_it_holds_once_its_consumer_has_shut_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only after the consumer's shutdown has the broker taken back what it could."""
    app_module = importlib.import_module("worker.app")  # `worker.app` is also the app

    calls: list[str] = []
    monkeypatch.setattr(CeleryWorker, "on_stopped", lambda self: calls.append("consumer"))
    monkeypatch.setattr(app_module, "hand_over", lambda: calls.append("hand over"))
    worker_cls = app.Worker
    assert issubclass(worker_cls, app_module.Worker) and worker_cls.app is app
    worker_cls.on_stopped(object.__new__(worker_cls))
    assert calls == ["consumer", "hand over"]


def test_the_ticker_stops_as_soon_as_its_worker_begins_to_shut_down() -> None:
    """A draining worker (its last delivery may take minutes) ticks no more: nobody here
    consumes its queues any longer."""
    step = Ticker(SimpleNamespace(app=None))
    started = threading.Event()

    def loop(_app: object) -> None:
        started.set()
        step._stop.wait(10)

    step._loop = loop  # type: ignore[method-assign,assignment]
    step.start(SimpleNamespace(app=None))
    try:
        assert started.wait(5)
        worker_shutting_down.send(sender="w@host", sig="SIGTERM", how="Warm", exitcode=0)
        assert step._thread is not None
        step._thread.join(2)
        assert not step._thread.is_alive()
    finally:
        step.stop(None)


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """Beat installs its SIGTERM and SIGINT handlers in this process: put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def stopped_beat(tmp_path: Path, *stops_in: str) -> tuple[Service, list[PersistentScheduler]]:
    """A beat service whose scheduler receives SIGTERM in each step of ``stops_in`` in
    turn ("build", "tick", "close N": its Nth close), and the schedulers it built. Its
    ticks send nothing."""
    bare = Celery("beat-test", broker="memory://", set_as_current=False)
    bare.conf.beat_schedule = {"nightly": {"task": "seedq.scheduled_run", "schedule": 3600.0}}
    built: list[PersistentScheduler] = []
    pending = list(stops_in)
    closes: list[int] = []

    class Stopped(PersistentScheduler):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(self)
            super().__init__(*args, **kwargs)

        def setup_schedule(self) -> None:
            stop_in("build")
            super().setup_schedule()

        def tick(self, *args: Any, **kwargs: Any) -> float:
            stop_in("tick")
            return 0.01

        def close(self) -> None:
            closes.append(1)
            stop_in(f"close {len(closes)}")
            super().close()

    def stop_in(step: str) -> None:
        if pending and pending[0] == step:
            pending.pop(0)
            signal.raise_signal(signal.SIGTERM)

    service = Service(
        bare,
        max_interval=1,
        schedule_filename=str(tmp_path / "celerybeat-schedule"),
        scheduler_cls=Stopped,
        remote_control=False,
    )
    Beat(app=bare, quiet=True).install_sync_handler(service)
    return service, built


def synced_entries(tmp_path: Path) -> list[str]:
    with shelve.open(str(tmp_path / "celerybeat-schedule")) as db:
        return sorted(db["entries"])


@pytest.mark.parametrize(
    "stops_in",
    [
        # Celery's handler built a second scheduler on the same file inside the first
        # (celery beat exited 1 now and then in the shutdown end-to-end test).
        ("build",),
        ("tick",),
        # A second signal broke into the close beat makes once the first had stopped it,
        # and out of beat.
        ("tick", "close 2"),
    ],
    ids=["while-building", "while-ticking", "twice"],
)
@pytest.mark.usefixtures("signal_handlers")
def test_beat_stopped_at_any_step_builds_one_scheduler_and_closes_it_with_its_schedule(
    tmp_path: Path, stops_in: tuple[str, ...]
) -> None:
    service, built = stopped_beat(tmp_path, *stops_in)
    service.start()  # returns: no SystemExit, no error, once the scheduler is closed
    assert len(built) == 1
    assert service._is_shutdown.is_set() and service._is_stopped.is_set()
    assert synced_entries(tmp_path) == ["celery.backend_cleanup", "nightly"]


def test_the_beat_app_stops_with_the_seedq_handler() -> None:
    assert issubclass(app.Beat, Beat) and app.Beat.app is app
