"""Pure decisions: which :mod:`provider.errors` class a response or exception is.

Nothing here does I/O or reads the clock unless no ``now_s`` is passed, so every rule
is table-tested. The client calls these once per response; retrying is the pipeline's.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pydantic
from httpx_sse import SSEError

from provider import errors as e
from seedq.credentials import redact_credentials

MAX_MESSAGE_CHARS = 300
_BEARER = re.compile(r"(?i)\bbearer\s+\S+")
_CREDITS = re.compile(r"(?i)insufficient[\s_-]*credit")
_SPACE = re.compile(r"\s+")
_HTML_TITLE = re.compile(r"(?is)<title[^>]*>(.*?)</title>")
_REDACTED = "[redacted]"

# Statuses that say "not now" rather than "never": request timeout and too early.
_TRANSIENT_4XX = frozenset({408, 425})
_TYPE_TO_CLASS: dict[str, type[e.ProviderError]] = {
    "unauthenticated": e.Unauthenticated,
    "invalid_params": e.InvalidRequest,
    "resource_not_found": e.NotFound,
}


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with bearer tokens and the given secrets removed, whitespace collapsed,
    and cut to :data:`MAX_MESSAGE_CHARS` so a proxy's page cannot flood a log line."""
    for secret in secrets:
        # Tiny "secrets" would shred ordinary words; real keys are long.
        if len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    text = _SPACE.sub(" ", _BEARER.sub("Bearer " + _REDACTED, redact_credentials(text))).strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date).

    A date in the past means "now" (0.0); anything unparseable means "not said" (None).
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT even when the zone is missing
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def decode_json(body: bytes) -> Any:
    """The JSON value of ``body``, or None when it is not JSON at all."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def error_details(body: bytes) -> tuple[str | None, str | None]:
    """``(error_type, human_message)`` from either documented error shape, or a guess.

    ``{"error": {"type", "title", "detail"}, "status_message"}`` and
    ``{"error": {"message"}}`` are documented; a bare ``{"error": "..."}``,
    ``{"message"}``/``{"detail"}`` and HTML pages are tolerated.
    """
    data = decode_json(body)
    if not isinstance(data, dict):
        return None, _non_json_message(body)
    err = data.get("error")
    etype: str | None = None
    parts: list[str] = []
    if isinstance(err, dict):
        etype = _text(err.get("type"))
        for key in ("title", "detail", "message"):
            text = _text(err.get(key))
            if text and text not in parts:
                parts.append(text)
    elif _text(err):
        parts.append(str(_text(err)))
    if etype is None and data.get("status") == "error":
        etype = _text(data.get("status_message"))
    if not parts:
        for key in ("message", "detail", "status_message"):
            text = _text(data.get(key))
            if text:
                parts.append(text)
                break
    return etype, ": ".join(parts) or None


def _non_json_message(body: bytes) -> str | None:
    if not body.strip():
        return None
    text = body[:4096].decode("utf-8", errors="replace")
    title = _HTML_TITLE.search(text)
    if title:
        return "non-JSON body: " + title.group(1)
    return "non-JSON body: " + re.sub(r"<[^>]*>", " ", text)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def classify_response(
    status_code: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Iterable[str] = (),
    now_s: float | None = None,
) -> e.ProviderError | None:
    """The error an API response stands for, or None when it is a success.

    Order matters: insufficient credits is run-fatal whatever the status; 401 before the
    generic 4xx rule; a 2xx whose body reads ``"status": "error"`` is not a success.
    """
    etype, detail = error_details(body)
    message = scrub(detail or f"HTTP {status_code} from the provider", secrets)
    kw: dict[str, Any] = {"status_code": status_code, "error_type": etype}
    if 200 <= status_code < 300:
        data = decode_json(body)
        if not (isinstance(data, dict) and data.get("status") == "error" and "error" in data):
            return None
    if _CREDITS.search(f"{etype or ''} {detail or ''}") or status_code == 402:
        return e.InsufficientCredits(message, **kw)
    if status_code == 401 or etype == "unauthenticated":
        return e.Unauthenticated(message, **kw)
    if 200 <= status_code < 300:
        return _TYPE_TO_CLASS.get(etype or "", e.ServerError)(message, **kw)
    retry_after_s = parse_retry_after(_header(headers, "Retry-After"), now_s=now_s)
    if status_code == 429:
        return e.RateLimited(message, retry_after_s=retry_after_s, **kw)
    if 500 <= status_code < 600 or status_code in _TRANSIENT_4XX:
        return e.ServerError(message, retry_after_s=retry_after_s, **kw)
    if status_code == 403:
        return e.Forbidden(message, **kw)
    if status_code == 404 or etype == "resource_not_found":
        return e.NotFound(message, **kw)
    if 400 <= status_code < 500:
        return e.InvalidRequest(message, **kw)
    # 1xx/3xx (a redirect to a login page, say) or a nonsense code: not the contract.
    return e.MalformedResponse(f"unexpected HTTP status: {message}", **kw)


def classify_exception(exc: BaseException, *, secrets: Iterable[str] = ()) -> e.ProviderError:
    """The provider error an exception raised while talking to the provider stands for."""
    if isinstance(exc, e.ProviderError):
        return exc
    what = scrub(str(exc) or type(exc).__name__, secrets)
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        found = classify_response(
            response.status_code, response.headers, _read_safely(response), secrets=secrets
        )
        return found or e.ServerError(what, status_code=response.status_code)
    if isinstance(exc, httpx.TimeoutException):
        return e.ProviderTimeout(f"{type(exc).__name__}: {what}")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return e.ProviderConnectionError(f"{type(exc).__name__}: {what}")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | httpx.LocalProtocolError):
        return e.InvalidRequest(f"{type(exc).__name__}: {what}")
    if isinstance(exc, httpx.DecodingError | httpx.TooManyRedirects | SSEError):
        return e.MalformedResponse(f"{type(exc).__name__}: {what}")
    if isinstance(exc, pydantic.ValidationError):
        return e.MalformedResponse(_validation_summary(exc))
    if isinstance(exc, ValueError | TypeError | RecursionError):  # JSON and decode errors
        return e.MalformedResponse(f"unreadable body ({type(exc).__name__})")
    if isinstance(exc, OSError):
        return e.ResultWriteError(f"{type(exc).__name__}: {what}")
    return e.TransientProviderError(f"unexpected {type(exc).__name__}: {what}")


def _read_safely(response: httpx.Response) -> bytes:
    try:
        return response.content
    except httpx.ResponseNotRead:
        return b""


def _validation_summary(exc: pydantic.ValidationError) -> str:
    # Only locations and kinds: input values can be large and are not ours to log.
    first = exc.errors(include_url=False, include_input=False)[:3]
    where = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['type']}" for err in first
    )
    return f"response did not match the contract ({exc.error_count()} problems: {where})"


def classify_generation_failure(
    error_message: str | None, *, generation_id: str | None = None
) -> e.PermanentJobError | e.RunFatalError:
    """What a generation that ended ``failed`` means for the run.

    "Insufficient credits" stops the run; any other reason (bad parameters, a content
    filter) belongs to this job alone.
    """
    message = scrub(error_message or "generation failed without a reason")
    if _CREDITS.search(message):
        return e.InsufficientCredits(message, error_type="generation_failed")
    return e.GenerationFailed(message, generation_id=generation_id)
