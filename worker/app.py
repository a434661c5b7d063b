"""The Celery app, ``celery -A worker ...``. Configured on first use from the settings,
never at import time (importing the package reads no environment)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from seedq.queueing import celery_config
from seedq.settings import load_settings
from worker.heartbeat import install_heartbeat
from worker.observability import install_observability
from worker.ticker import install_ticker


class SeedqCelery(Celery):  # type: ignore[misc]
    def on_configure(self) -> None:
        self.conf.update(celery_config(load_settings()))


def install_worker_steps(app: Any) -> None:
    """What every worker process runs beside its tasks: the tick, and the metrics server
    with the JSON log signals."""
    install_ticker(app)
    install_heartbeat(app)
    install_observability(app)


app = SeedqCelery("seedq", include=["worker.tasks"])
install_worker_steps(app)
