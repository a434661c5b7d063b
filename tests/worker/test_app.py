"""What ``celery -A worker`` runs beside its tasks, each installed by the function that
says so: the tick (``install_ticker``), the heartbeat (``install_heartbeat``) and metrics
with JSON logs (``install_observability``), all through ``install_worker_steps``; and
how its worker stops."""

from __future__ import annotations

import importlib
import threading
from types import SimpleNamespace

import pytest
from celery import Celery
from celery.apps.worker import Worker as CeleryWorker
from celery.signals import worker_shutting_down

from worker.app import app, install_worker_steps
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
