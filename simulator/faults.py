"""Fault injection on ``/api/*`` requests (never on ``/_sim/*`` or the result files).

Per request two draws from the seeded fault RNG, always both so a seed gives the same
sequence whatever happens: one decides *slow* (delay, then answer normally), the other
picks at most one of 5xx, 429, drop (connection closed before the request is handled)
and drop-after (handled, then closed: the answer is lost, the effect is not).

A dropped connection is made at the ASGI level: send the response start, then raise
:class:`DroppedConnection`; uvicorn closes the transport of a response it cannot finish,
so the client sees a broken response (``httpx.RemoteProtocolError``), not a status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from enum import Enum
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulator.config import SimConfig
from simulator.state import Store

SERVER_ERROR_STATUSES = (500, 502, 503)


class Fault(Enum):
    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"
    DROP = "drop"
    DROP_AFTER = "drop_after"


class DroppedConnection(Exception):
    """Raised after the response start so that uvicorn closes the connection."""


def choose_fault(config: SimConfig, draw: float) -> Fault | None:
    """The fault for a uniform ``draw`` in [0, 1): rates are consecutive slices."""
    edge = 0.0
    for fault, rate in (
        (Fault.SERVER_ERROR, config.error_rate),
        (Fault.RATE_LIMITED, config.rate_limit_rate),
        (Fault.DROP, config.drop_rate),
        (Fault.DROP_AFTER, config.drop_after_rate),
    ):
        edge += rate
        if draw < edge:
            return fault
    return None


class _QuietDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for every injected drop."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


def install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


async def _json(send: Send, status: int, body: dict[str, Any], headers: list[Any]) -> None:
    payload = json.dumps(body).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": payload})


async def _drop(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise DroppedConnection


async def _discard(_message: Message) -> None:
    return None


class FaultMiddleware:
    """Wraps the app; reads the live config and RNG through the callables it is given."""

    def __init__(
        self,
        app: ASGIApp,
        config: Callable[[], SimConfig],
        rng: Callable[[], random.Random],
        store: Callable[[], Store],
    ) -> None:
        self.app, self._config, self._rng, self._store = app, config, rng, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith("/api/"):
            await self.app(scope, receive, send)
            return
        config, rng = self._config(), self._rng()
        slow = rng.random() < config.slow_rate
        fault = choose_fault(config, rng.random())
        status = SERVER_ERROR_STATUSES[rng.randrange(len(SERVER_ERROR_STATUSES))]
        faults = self._store().faults
        if slow:
            faults["slow"] += 1
            await asyncio.sleep(config.slow_delay_s)
        if fault is not None:
            faults[fault.value] += 1
        echo = ""
        if config.echo_auth:
            echo = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if fault is Fault.SERVER_ERROR:
            await _json(send, status, server_error_body(echo), [])
        elif fault is Fault.RATE_LIMITED:
            retry = [(b"retry-after", str(config.retry_after_s).encode())]
            message = f"Too many requests for {echo}" if echo else "Too many requests"
            await _json(send, 429, {"error": {"message": message}}, retry)
        elif fault is Fault.DROP or (fault is Fault.DROP_AFTER and scope["path"] == "/api/events"):
            await _drop(send)
        elif fault is Fault.DROP_AFTER:
            await self.app(scope, receive, _discard)
            await _drop(send)
        else:
            await self.app(scope, receive, send)


def server_error_body(echo: str = "") -> dict[str, Any]:
    """A 5xx body; ``echo`` (an Authorization value) quoted in it when given."""
    return {
        "error": {
            "type": "unknown_error",
            "title": f"Internal error ({echo})" if echo else "Internal error",
            "detail": f"Simulated failure; request had Authorization: {echo}"
            if echo
            else "Simulated failure",
        },
        "status": "error",
        "status_message": "unknown_error",
    }
