"""Structured logs: one JSON object per line, carrying the run and job a line is about.

``SEEDQ_LOG_FORMAT=json`` turns it on for worker processes (``worker.observability``).
The run and job ids come from context variables set around each task step
(:func:`job_context`), so a plain ``log.info(...)`` anywhere below a step carries them.

Secrets: settings keep the API key as a SecretStr and provider errors are scrubbed where
they are made; the formatter also replaces every secret it is given, and any bearer
token, in the whole line (message and traceback), as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

RUN_ID: ContextVar[str | None] = ContextVar("seedq_run_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("seedq_job_id", default=None)
REDACTED = "[redacted]"
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


@contextmanager
def job_context(run_id: str | None, job_id: str | None) -> Iterator[None]:
    """Log lines inside carry these ids."""
    run_token, job_token = RUN_ID.set(run_id), JOB_ID.set(job_id)
    try:
        yield
    finally:
        RUN_ID.reset(run_token)
        JOB_ID.reset(job_token)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "run_id", "job_id", "exc"?}`` per line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "run_id": getattr(record, "run_id", None) or RUN_ID.get(),
            "job_id": getattr(record, "job_id", None) or JOB_ID.get(),
        }
        task_id = getattr(record, "task_id", None)
        if task_id and task_id != "???":
            payload["task_id"] = task_id
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        return self.redact(json.dumps(payload, ensure_ascii=False, default=str))

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
            text = text.replace(json.dumps(secret)[1:-1], REDACTED)
        return _BEARER.sub(r"\g<1>" + REDACTED, text)


def use_json(logger: logging.Logger, secrets: Iterable[str] = ()) -> None:
    """Give every handler of ``logger`` the JSON formatter."""
    formatter = JsonFormatter(secrets)
    for handler in logger.handlers:
        handler.setFormatter(formatter)
