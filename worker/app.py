"""The Celery app, ``celery -A worker ...``. Configured on first use from the settings,
never at import time (importing the package reads no environment)."""

from __future__ import annotations

from celery import Celery

from seedq.queueing import celery_config
from seedq.settings import load_settings
from worker.ticker import install_ticker


class SeedqCelery(Celery):  # type: ignore[misc]
    def on_configure(self) -> None:
        self.conf.update(celery_config(load_settings()))


app = SeedqCelery("seedq", include=["worker.tasks"])
install_ticker(app)
