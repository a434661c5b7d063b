"""Structured logs: one JSON object per line, carrying the run and job a line is about.

``SEEDQ_LOG_FORMAT=json`` turns it on for worker processes (``worker.observability``).
The run and job ids come from context variables set around each task step
(:func:`job_context`), so a plain ``log.info(...)`` anywhere below a step carries them.

Secrets: settings keep the API key as a SecretStr and provider errors are scrubbed where
they are made; as a last line of defence, in both formats, every worker log line
(message and traceback) has each secret of :func:`log_secrets`, any bearer token and
any URL's query credentials replaced (:func:`use_json`, :func:`use_redaction`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from seedq.credentials import REDACTED as REDACTED  # re-exported: tests and callers
from seedq.credentials import redact_credentials

if TYPE_CHECKING:
    from seedq.settings import Settings

RUN_ID: ContextVar[str | None] = ContextVar("seedq_run_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("seedq_job_id", default=None)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
MIN_SECRET_CHARS = 4  # shorter "secrets" would shred ordinary words
# Credentials boto3 reads from the environment (the settings never hold them).
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def log_secrets(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """Every secret a worker holds: the API key, the S3 secret key and session token,
    and the passwords in the broker and Redis URLs."""
    found = [settings.api_key_value() or ""]
    found += [environ.get(name, "") for name in AWS_SECRET_VARIABLES]
    for url in (settings.broker_url, settings.redis_url):
        try:
            found.append((urlsplit(url).password or "") if url else "")
        except ValueError:
            continue
    return [s for s in dict.fromkeys(found) if len(s) >= MIN_SECRET_CHARS]


class Redactor:
    """Replaces each secret (raw and JSON-escaped), any bearer token and the credentials
    of any URL (:mod:`seedq.credentials`) in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(s for s in secrets if s and len(s) >= MIN_SECRET_CHARS)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
            text = text.replace(json.dumps(secret)[1:-1], REDACTED)
        return redact_credentials(_BEARER.sub(r"\g<1>" + REDACTED, text))


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
        self.redact = Redactor(secrets)
        self.secrets = self.redact.secrets

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


class RedactingFormatter(logging.Formatter):
    """Another formatter's lines (Celery's text format), with the secrets replaced."""

    def __init__(self, inner: logging.Formatter | None, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.redact = Redactor(secrets)
        self.secrets = self.redact.secrets

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.inner.format(record))


def use_json(logger: logging.Logger, secrets: Iterable[str] = ()) -> None:
    """Give every handler of ``logger`` the JSON formatter."""
    formatter = JsonFormatter(secrets)
    for handler in logger.handlers:
        handler.setFormatter(formatter)


def use_redaction(logger: logging.Logger, secrets: Iterable[str] = ()) -> None:
    """Keep every handler's text format, with the secrets replaced in each line."""
    for handler in logger.handlers:
        if not isinstance(handler.formatter, RedactingFormatter | JsonFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter, secrets))
