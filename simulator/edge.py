"""What every request to the simulator passes through before (and after) its route: the
count per endpoint (``GET /_sim/stats``), bearer authentication of ``/api/*`` (401 with
the provider's typed error body), and the error bodies of an :class:`ApiError` or an
unknown route, in the provider's shapes (docs/provider-api.md)."""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.errors import ApiError
from simulator.files import FILES_PREFIX
from simulator.runner import SimCore

ENDPOINTS = (
    ("/api/ai/queue/", "/api/ai/queue/{generation_id}"),
    ("/api/ai/generations/", "/api/ai/generations/{generation_id}"),
    ("/api/ai/models/", "/api/ai/models/{id}"),
    (FILES_PREFIX, FILES_PREFIX + "{file}"),
)


def typed_error(status: int, error_type: str, title: str, detail: str) -> JSONResponse:
    body = {
        "error": {"type": error_type, "title": title, "detail": detail},
        "status": "error",
        "status_message": error_type,
    }
    return JSONResponse(body, status_code=status)


def endpoint_key(method: str, path: str) -> str:
    """``"GET /api/ai/queue/{generation_id}"`` for any id: the key of the request counters."""
    for prefix, template in ENDPOINTS:
        if path.startswith(prefix) and len(path) > len(prefix):
            suffix = "/retry" if template.endswith("}") and path.endswith("/retry") else ""
            return f"{method} {template}{suffix}"
    return f"{method} {path}"


def bearer_ok(header: str | None, api_key: str | None) -> bool:
    """A ``Bearer`` header with a non-empty key, equal to ``api_key`` when one is set."""
    scheme, _, key = (header or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return False
    return api_key is None or hmac.compare_digest(key.encode(), api_key.encode())


class EdgeMiddleware:
    """Counts requests per endpoint and enforces bearer authentication on /api/*."""

    def __init__(self, app: ASGIApp, core: SimCore) -> None:
        self.app, self.core = app, core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and path.startswith(("/api/", FILES_PREFIX)):
            self.core.store.requests[endpoint_key(str(scope["method"]), path)] += 1
        if scope["type"] == "http" and path.startswith("/api/"):
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if not bearer_ok(auth, self.core.config.api_key):
                detail = "Missing or invalid API key" if auth else "Missing Authorization header"
                response = typed_error(401, "unauthenticated", "Unauthenticated", detail)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def api_error(_request: Request, exc: Exception) -> Response:
    # bandit B101: narrows the type: Starlette calls this handler for ApiError only.
    assert isinstance(exc, ApiError)  # nosec B101
    if not exc.error_type:  # the documented untyped shape
        return JSONResponse({"error": {"message": exc.detail}}, status_code=exc.status)
    return typed_error(exc.status, exc.error_type, exc.title, exc.detail)


async def http_error(_request: Request, exc: Exception) -> Response:
    # bandit B101: narrows the type: Starlette calls this handler for HTTPException only.
    assert isinstance(exc, HTTPException)  # nosec B101
    if exc.status_code == 404:
        return typed_error(404, "resource_not_found", "Not found", "No such endpoint")
    return JSONResponse({"error": {"message": str(exc.detail)}}, status_code=exc.status_code)
