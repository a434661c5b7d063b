"""JSON log lines: run and job ids from the task context, and no secrets, ever."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from seedq.logs import JsonFormatter, job_context, use_json
from worker.provider.client import OxenClient
from worker.provider.errors import ProviderError

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
    from worker.observability import _json_logs

    logger = logging.getLogger("seedq.test.signal")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    try:
        monkeypatch.setenv("SEEDQ_LOG_FORMAT", "text")
        _json_logs(logger=logger)
        assert not isinstance(handler.formatter, JsonFormatter)
        monkeypatch.setenv("SEEDQ_LOG_FORMAT", "json")
        monkeypatch.setenv("OXEN_API_KEY", KEY)
        _json_logs(logger=logger)
        assert isinstance(handler.formatter, JsonFormatter)
        assert handler.formatter.secrets == (KEY,)
    finally:
        logger.removeHandler(handler)
