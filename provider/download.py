"""Result-file checks for :meth:`OxenClient.download`: presigned URLs, not the API.

A presigned link that is refused (401/403/404/410) has most likely expired, so it gets
its own error the caller can answer by fetching the generation again.

A timeout bounds each read only: a server that sends a byte every few seconds would
hold a worker thread for days. So a download also has a :class:`Deadline` for the whole
of it, and past it fails as a :class:`~provider.errors.ProviderTimeout`: transient, since
the link stays valid for a while and a later try may find a faster path. Every socket
wait of the request (connect, TLS, each write and read: the redirect hops and the
response headers as much as the body) is cut to what is left of it
(:func:`deadline_transport`), so a server that trickles its headers is cut off at the
deadline too; the body is also checked at every chunk as it arrives.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx

from provider import errors as e
from provider.classify import classify_response

MAX_ERROR_BODY_BYTES = 64 * 1024
EXPIRED_STATUSES = frozenset({401, 403, 404, 410})


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a download must be over, on the monotonic clock."""

    limit_s: float
    end: float

    @classmethod
    def start(cls, limit_s: float) -> Deadline:
        return cls(limit_s, time.monotonic() + limit_s)

    def left_s(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def timeout(self, timeout: httpx.Timeout) -> httpx.Timeout:
        """``timeout`` with every phase cut to what is left: no single wait may be
        longer than the deadline itself."""
        left = self.left_s()
        return httpx.Timeout(
            connect=_at_most(timeout.connect, left),
            read=_at_most(timeout.read, left),
            write=_at_most(timeout.write, left),
            pool=_at_most(timeout.pool, left),
        )

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Socket waits inside, on a :func:`deadline_transport`, end by the deadline."""
        token = _ACTIVE.set(self)
        try:
            yield
        finally:
            _ACTIVE.reset(token)

    def check(self, written: int | None = None) -> None:
        """ProviderTimeout, naming the deadline, once it has passed."""
        if time.monotonic() > self.end:
            got = "" if written is None else f" ({written} bytes in)"
            raise e.ProviderTimeout(
                f"download not finished within its {self.limit_s:g} s deadline{got}; "
                "it is tried again later",
                error_type="download_deadline",
            )


def _at_most(value: float | None, limit: float) -> float:
    return limit if value is None else min(value, limit)


# The deadline of the download this thread is running, if any (Deadline.applied).
_ACTIVE: ContextVar[Deadline | None] = ContextVar("seedq_download_deadline", default=None)


def _bounded(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` cut to what is left of the running download's deadline; ``expired``
    (httpx then raises its own timeout) once nothing is: a socket timeout of 0 would
    not wait at all but make the socket non-blocking."""
    deadline = _ACTIVE.get()
    if deadline is None:
        return timeout
    left = deadline.left_s()
    if left <= 0:
        raise expired("the download's deadline has passed")
    return _at_most(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sockets, each wait cut by the running download's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport, its sockets under :meth:`Deadline.applied`.

    httpx takes no network backend, so the one its httpcore pool made is wrapped in
    place, before any connection exists: private attributes of httpx 0.28 and httpcore
    1.0, checked here so that an upgrade that moves them fails at once, never quietly
    drops the deadline (``tests/provider/test_download_deadline.py`` pins it too)."""
    transport = httpx.HTTPTransport(limits=limits)
    pool = transport._pool
    if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(
        getattr(pool, "_network_backend", None), httpcore.NetworkBackend
    ):
        raise RuntimeError("httpx's transport no longer has the pool seedq wraps")
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


def check_download(response: httpx.Response, max_bytes: int, secrets: tuple[str, ...]) -> None:
    """Raise the error a result-file response stands for before its body is read."""
    status = response.status_code
    if status in EXPIRED_STATUSES:
        raise e.ResultUrlExpired(
            "result URL refused (expired?): get() the generation for a fresh one",
            status_code=status,
        )
    if not 200 <= status < 300:
        body = _read_capped(response, MAX_ERROR_BODY_BYTES)
        problem = classify_response(status, response.headers, body, secrets=secrets)
        raise problem or e.MalformedResponse("unexpected status", status_code=status)
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise e.ResultTooLarge(
            f"result is {declared} bytes, above the {max_bytes}-byte cap", max_bytes=max_bytes
        )
    if response.headers.get("Content-Type", "").startswith(("text/html", "application/json")):
        # A proxy's error page or an API error object where a video was expected.
        raise e.MalformedResponse("result URL returned a page, not a file", status_code=status)


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def write_capped(response: httpx.Response, part: Path, max_bytes: int, deadline: Deadline) -> int:
    """Stream the body into ``part`` chunk by chunk; ResultTooLarge past ``max_bytes``,
    ProviderTimeout past the ``deadline``."""
    written = 0
    with part.open("wb") as out:
        # Chunks as they arrive (no chunk size): a fixed size would gather a trickle for
        # hours before the deadline is looked at.
        for chunk in response.iter_bytes():
            deadline.check(written)
            written += len(chunk)
            if written > max_bytes:
                raise e.ResultTooLarge(
                    f"result exceeds the {max_bytes}-byte cap", max_bytes=max_bytes
                )
            out.write(chunk)
    if written == 0:
        raise e.MalformedResponse("result file is empty")
    return written
