"""JSON log lines: run and job ids from the task context, and no secrets, ever."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from provider.client import OxenClient
from provider.errors import ProviderError
from seedq.logs import JsonFormatter, RedactingFormatter, job_context, log_secrets, use_json
from seedq.settings import load_settings

KEY = "sk-LOGCHECK-0123456789abcdef"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("seedq.test.logs")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    use_json(logger, [KEY])
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_carry_run_and_job_ids(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info("outside")
    with job_context("r1", "job-7"):
        logger.warning("step %s failed", "submit")
        with job_context("r2", None):
            logger.info("nested")
    logger.info("after")
    out = lines(stream)
    assert [(o["run_id"], o["job_id"]) for o in out] == [
        (None, None),
        ("r1", "job-7"),
        ("r2", None),
        (None, None),
    ]
    assert out[1]["message"] == "step submit failed" and out[1]["level"] == "WARNING"
    assert out[1]["logger"] == "seedq.test.logs" and str(out[1]["ts"]).endswith("+00:00")


def test_provider_error_with_key_is_logged_without_it(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers["Authorization"]
        return httpx.Response(500, json={"error": {"title": auth, "detail": f"key={KEY}"}})

    logger, stream = logged
    client = OxenClient("http://provider.test", KEY, transport=httpx.MockTransport(echo))
    with job_context("r1", "job-1"), pytest.raises(ProviderError):
        try:
            client.get("gen-1")
        except ProviderError as exc:
            logger.exception("provider failed: %s (%r)", exc, exc.args)
            raise
    text = stream.getvalue()
    assert KEY not in text and "Bearer sk-" not in text
    (line,) = lines(stream)
    assert line["job_id"] == "job-1" and "Traceback" in str(line["exc"])


def test_formatter_redacts_even_unscrubbed_text() -> None:
    formatter = JsonFormatter([KEY])
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "auth %s", (KEY,), None)
    record2 = logging.LogRecord("x", logging.ERROR, __file__, 1, "Bearer abc.def", None, None)
    assert KEY not in formatter.format(record)
    assert "abc.def" not in formatter.format(record2)


def test_worker_logging_signal_applies_json_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.observability import _configure_logs

    logger = logging.getLogger("seedq.test.signal")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    try:
        monkeypatch.setenv("SEEDQ_LOG_FORMAT", "text")
        monkeypatch.setenv("OXEN_API_KEY", KEY)
        _configure_logs(logger=logger)
        assert isinstance(handler.formatter, RedactingFormatter)
        assert KEY in handler.formatter.secrets
        handler.setFormatter(None)
        monkeypatch.setenv("SEEDQ_LOG_FORMAT", "json")
        _configure_logs(logger=logger)
        assert isinstance(handler.formatter, JsonFormatter)
        assert KEY in handler.formatter.secrets
    finally:
        logger.removeHandler(handler)


S3_SECRET, S3_TOKEN, REDIS_PASSWORD = "s3-secret-LOGCHECK-42", "s3-token-LOGCHECK-43", "redispw-44"


def test_log_secrets_are_every_secret_a_worker_holds() -> None:
    settings = load_settings(
        oxen_api_key=KEY,
        broker_url=f"redis://:{REDIS_PASSWORD}@redis:6379/0",
        redis_url=f"redis://user:{REDIS_PASSWORD}@redis:6379/1",
    )
    environ = {"AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_SESSION_TOKEN": S3_TOKEN, "X": "abc"}
    assert log_secrets(settings, environ) == [KEY, S3_SECRET, S3_TOKEN, REDIS_PASSWORD]
    assert log_secrets(load_settings(oxen_api_key=None, broker_url="", redis_url=""), {}) == []


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_text_and_json_lines_are_redacted(
    fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever a line carries (a message, an argument, a traceback), no secret is
    written, in Celery's text format as in JSON."""
    from worker.observability import _configure_logs

    monkeypatch.setenv("SEEDQ_LOG_FORMAT", fmt)
    monkeypatch.setenv("OXEN_API_KEY", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", S3_TOKEN)
    stream = io.StringIO()
    logger = logging.getLogger(f"seedq.test.redact.{fmt}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        _configure_logs(logger=logger)
        logger.warning("key %s secret %s", KEY, S3_SECRET)
        logger.warning("Authorization: Bearer %s", "opaque.token.value")
        try:
            raise RuntimeError(f"boom {S3_TOKEN} {json.dumps(KEY)}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "failed" in text and "Traceback" in text and "[redacted]" in text
    for secret in (KEY, S3_SECRET, S3_TOKEN, "opaque.token.value"):
        assert secret not in text
        assert secret[-8:] not in text
    if fmt == "text":
        assert text.startswith("[WARNING] key [redacted] secret [redacted]")
