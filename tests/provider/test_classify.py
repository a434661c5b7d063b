"""Table tests of the pure classifiers: responses, exceptions, failed generations."""

from __future__ import annotations

import json

import httpx
import pydantic
import pytest
from httpx_sse import SSEError

from provider import errors as e
from provider.classify import (
    classify_exception,
    classify_generation_failure,
    classify_response,
    error_details,
    parse_retry_after,
    scrub,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def shape1(etype: str, title: str = "Title", detail: str = "Detail") -> bytes:
    return json.dumps(
        {
            "error": {"type": etype, "title": title, "detail": detail},
            "status": "error",
            "status_message": etype,
        }
    ).encode()


def shape2(message: str) -> bytes:
    return json.dumps({"error": {"message": message}}).encode()


HTML = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@pytest.mark.parametrize(
    ("status", "body", "expected", "etype"),
    [
        (200, b'{"generation_id": "g"}', None, None),
        (201, b"", None, None),
        (204, b"", None, None),
        (200, HTML, None, None),  # 2xx bodies are judged by the parser, not here
        (200, shape1("invalid_params"), e.InvalidRequest, "invalid_params"),
        (200, shape1("resource_not_found"), e.NotFound, "resource_not_found"),
        (200, shape1("unauthenticated"), e.Unauthenticated, "unauthenticated"),
        (200, shape1("unknown_error"), e.ServerError, "unknown_error"),
        (400, shape1("invalid_params"), e.InvalidRequest, "invalid_params"),
        (400, shape2("bad"), e.InvalidRequest, None),
        (400, b"", e.InvalidRequest, None),
        (401, shape1("unauthenticated"), e.Unauthenticated, "unauthenticated"),
        (401, shape2("Unauthorized"), e.Unauthenticated, None),
        (401, HTML, e.Unauthenticated, None),
        (403, shape2("forbidden"), e.Forbidden, None),
        (403, shape1("unauthenticated"), e.Unauthenticated, "unauthenticated"),
        (404, shape1("resource_not_found"), e.NotFound, "resource_not_found"),
        (404, b"Not Found", e.NotFound, None),
        (405, b"", e.InvalidRequest, None),
        (409, shape2("conflict"), e.InvalidRequest, None),
        (410, b"", e.InvalidRequest, None),
        (413, b"", e.InvalidRequest, None),
        (422, shape1("invalid_params"), e.InvalidRequest, "invalid_params"),
        (422, b'{"detail": [{"loc": ["body"]}]}', e.InvalidRequest, None),
        (400, shape1("resource_not_found"), e.NotFound, "resource_not_found"),
        (408, b"", e.ServerError, None),
        (425, b"", e.ServerError, None),
        (429, shape2("slow down"), e.RateLimited, None),
        (429, b"", e.RateLimited, None),
        (500, shape1("unknown_error"), e.ServerError, "unknown_error"),
        (500, b"Internal Server Error", e.ServerError, None),
        (502, HTML, e.ServerError, None),
        (503, b"", e.ServerError, None),
        (504, b"\x00\xff\xfe", e.ServerError, None),
        (599, b"{}", e.ServerError, None),
        (500, shape1("invalid_params"), e.ServerError, "invalid_params"),
        (402, shape2("Payment required"), e.InsufficientCredits, None),
        (400, shape2("Insufficient credits"), e.InsufficientCredits, None),
        (
            403,
            shape1("invalid_params", "Insufficient Credits", "top up"),
            e.InsufficientCredits,
            "invalid_params",
        ),
        (500, shape2("insufficient credits"), e.InsufficientCredits, None),
        (200, shape1("insufficient_credits"), e.InsufficientCredits, "insufficient_credits"),
        (302, b"", e.MalformedResponse, None),
        (101, b"", e.MalformedResponse, None),
        (0, b"", e.MalformedResponse, None),
        (999, b"", e.MalformedResponse, None),
    ],
)
def test_classify_response(
    status: int, body: bytes, expected: type[e.ProviderError] | None, etype: str | None
) -> None:
    found = classify_response(status, {}, body, now_s=NOW)
    if expected is None:
        assert found is None
        return
    assert type(found) is expected
    assert found.status_code == status
    assert found.error_type == etype
    assert found.message


@pytest.mark.parametrize(
    ("status", "family"),
    [
        (500, e.TransientProviderError),
        (429, e.TransientProviderError),
        (400, e.PermanentJobError),
        (404, e.PermanentJobError),
        (422, e.PermanentJobError),
        (403, e.PermanentJobError),
        (401, e.RunFatalError),
        (402, e.RunFatalError),
    ],
)
def test_families(status: int, family: type[e.ProviderError]) -> None:
    assert isinstance(classify_response(status, {}, b""), family)


@pytest.mark.parametrize(
    ("body", "etype", "message"),
    [
        (
            shape1("invalid_params", "Bad duration", "must be 4-15"),
            "invalid_params",
            "Bad duration: must be 4-15",
        ),
        (shape1("unknown_error", "", ""), "unknown_error", "unknown_error"),
        (shape2("Model not found"), None, "Model not found"),
        (b'{"error": "plain string"}', None, "plain string"),
        (b'{"message": "top-level"}', None, "top-level"),
        (b'{"detail": "fastapi style"}', None, "fastapi style"),
        (b'{"status": "error", "status_message": "quota"}', "quota", "quota"),
        (b'{"error": {"type": 5, "message": ["x"]}}', None, None),
        (b"[1, 2]", None, "non-JSON body: [1, 2]"),
        (HTML, None, "non-JSON body: 502 Bad Gateway"),
        (b"<p>oops</p>", None, "non-JSON body:  oops "),
        (b"", None, None),
        (b"   ", None, None),
    ],
)
def test_error_details(body: bytes, etype: str | None, message: str | None) -> None:
    assert error_details(body) == (etype, message)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("0", 0.0),
        ("5", 5.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tue, 14 Nov 2023 22:13:20 GMT", 0.0),
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # past: retry now
        ("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0),
        ("Tue, 14 Nov 2023 22:13:50 -0000", None),  # no zone information
        ("Tue, 99 Nov 2023 22:13:50 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now_s=NOW) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "7"}, 7.0),
        ({"RETRY-AFTER": "Tue, 14 Nov 2023 22:13:30 GMT"}, 10.0),
        ({}, None),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_carried(status: int, headers: dict[str, str], expected: float | None) -> None:
    found = classify_response(status, headers, b"", now_s=NOW)
    assert isinstance(found, e.TransientProviderError)
    assert found.retry_after_s == expected


def test_retry_after_from_httpx_headers() -> None:
    found = classify_response(429, httpx.Headers({"retry-after": "3"}), b"", now_s=NOW)
    assert isinstance(found, e.RateLimited) and found.retry_after_s == 3.0


REQ = httpx.Request("GET", "https://hub.oxen.ai/api/ai/queue")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectTimeout("t", request=REQ), e.ProviderTimeout),
        (httpx.ReadTimeout("t", request=REQ), e.ProviderTimeout),
        (httpx.WriteTimeout("t", request=REQ), e.ProviderTimeout),
        (httpx.PoolTimeout("t", request=REQ), e.ProviderTimeout),
        (httpx.ConnectError("refused", request=REQ), e.ProviderConnectionError),
        (httpx.ReadError("reset", request=REQ), e.ProviderConnectionError),
        (httpx.WriteError("broken pipe", request=REQ), e.ProviderConnectionError),
        (httpx.CloseError("x", request=REQ), e.ProviderConnectionError),
        (httpx.RemoteProtocolError("peer closed", request=REQ), e.ProviderConnectionError),
        (httpx.LocalProtocolError("bad header", request=REQ), e.InvalidRequest),
        (httpx.UnsupportedProtocol("ftp", request=REQ), e.InvalidRequest),
        (httpx.InvalidURL("bad"), e.InvalidRequest),
        (httpx.DecodingError("gzip", request=REQ), e.MalformedResponse),
        (httpx.TooManyRedirects("loop", request=REQ), e.MalformedResponse),
        (SSEError("not an event stream"), e.MalformedResponse),
        (json.JSONDecodeError("x", "doc", 0), e.MalformedResponse),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), e.MalformedResponse),
        (ValueError("x"), e.MalformedResponse),
        (OSError(28, "No space left on device"), e.ResultWriteError),
        (PermissionError("denied"), e.ResultWriteError),
        (RuntimeError("surprise"), e.TransientProviderError),
        (
            httpx.HTTPStatusError(
                "x", request=REQ, response=httpx.Response(404, request=REQ, content=b"")
            ),
            e.NotFound,
        ),
        (
            httpx.HTTPStatusError(
                "x", request=REQ, response=httpx.Response(401, request=REQ, content=b"")
            ),
            e.Unauthenticated,
        ),
    ],
)
def test_classify_exception(exc: BaseException, expected: type[e.ProviderError]) -> None:
    assert type(classify_exception(exc)) is expected


def test_classify_exception_passes_provider_errors_through() -> None:
    original = e.NotFound("gone")
    assert classify_exception(original) is original


def test_classify_validation_error_has_no_input_values() -> None:
    class M(pydantic.BaseModel):
        n: int

    with pytest.raises(pydantic.ValidationError) as info:
        M.model_validate({"n": "sk-very-secret-looking-value"})
    found = classify_exception(info.value)
    assert isinstance(found, e.MalformedResponse)
    assert "n: int_parsing" in found.message
    assert "sk-very-secret" not in str(found)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Insufficient credits", e.InsufficientCredits),
        ("insufficient credits: top up at oxen.ai", e.InsufficientCredits),
        ("INSUFFICIENT_CREDITS", e.InsufficientCredits),
        ("Invalid duration: must be 4-15", e.GenerationFailed),
        ("Content blocked by safety filter", e.GenerationFailed),
        ("input_image could not be fetched", e.GenerationFailed),
        ("", e.GenerationFailed),
        (None, e.GenerationFailed),
    ],
)
def test_classify_generation_failure(message: str | None, expected: type[e.ProviderError]) -> None:
    found = classify_generation_failure(message, generation_id="g1")
    assert type(found) is expected
    assert found.message
    if isinstance(found, e.GenerationFailed):
        assert found.generation_id == "g1"


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("key sk-abc123 leaked", ["sk-abc123"], "key [redacted] leaked"),
        ("Authorization: Bearer abc.def", [], "Authorization: Bearer [redacted]"),
        ("bearer   xyz", [], "Bearer [redacted]"),
        ("a\n\n b\t c", [], "a b c"),
        ("short key ab", ["ab"], "short key ab"),  # tiny secrets would shred words
        ("x" * 1000, [], "x" * 299 + "…"),
    ],
)
def test_scrub(text: str, secrets: list[str], expected: str) -> None:
    assert scrub(text, secrets) == expected


def test_classify_response_scrubs_secrets_from_bodies() -> None:
    body = shape2("your key sk-LEAK-1234 is wrong; sent Authorization: Bearer sk-LEAK-1234")
    found = classify_response(401, {}, body, secrets=["sk-LEAK-1234"])
    assert found is not None
    assert "sk-LEAK-1234" not in str(found) + repr(found) + repr(found.args)
