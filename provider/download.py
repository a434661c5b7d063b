"""Result-file checks for :meth:`OxenClient.download`: presigned URLs, not the API.

A presigned link that is refused (401/403/404/410) has most likely expired, so it gets
its own error the caller can answer by fetching the generation again.

A timeout bounds each read only: a server that sends a byte every few seconds would
hold a worker thread for days. So a download also has a :class:`Deadline` for the whole
of it, checked at every chunk as it arrives (so it is overrun by one read timeout at
most), and past it fails as a :class:`~provider.errors.ProviderTimeout`: transient, since
the link stays valid for a while and a later try may find a faster path. The headers
are not under it: a server may still trickle those, up to h11's 100 KiB header limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

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
