"""What ``celery -A worker`` runs beside its tasks, each installed by the function that
says so: the tick (``install_ticker``), the heartbeat (``install_heartbeat``) and metrics
with JSON logs (``install_observability``), all through ``install_worker_steps``."""

from __future__ import annotations

from celery import Celery

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
