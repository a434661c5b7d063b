"""Wires metrics and JSON logs into a Celery worker: a bootstep that serves
``/metrics`` on ``SEEDQ_METRICS_PORT`` and logging signals that apply
``SEEDQ_LOG_FORMAT`` and redact the worker's secrets from every line, in either format.
Settings are read when the worker starts, not at import."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import bootsteps
from celery.signals import after_setup_logger, after_setup_task_logger

from seedq.logs import log_secrets, use_json, use_redaction
from seedq.settings import load_settings

log = logging.getLogger(__name__)


class MetricsServer(bootsteps.StartStopStep):  # type: ignore[misc]
    """Serves this worker's Prometheus metrics while it runs (port 0: not at all)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._server: Any = None

    def start(self, parent: Any) -> None:
        settings = load_settings()
        if not settings.metrics_port:
            return
        from worker.metrics import start_metrics_server

        self._server = start_metrics_server(settings.metrics_port)

    def stop(self, parent: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def _configure_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is None:
        return
    settings = load_settings()
    secrets = log_secrets(settings, os.environ)
    if settings.log_format == "json":
        use_json(logger, secrets)
    else:
        use_redaction(logger, secrets)


def install_observability(app: Any) -> None:
    if MetricsServer not in app.steps["worker"]:
        app.steps["worker"].add(MetricsServer)
    after_setup_logger.connect(_configure_logs, weak=False, dispatch_uid="seedq-json-logs")
    after_setup_task_logger.connect(
        _configure_logs, weak=False, dispatch_uid="seedq-json-task-logs"
    )
