"""Result-file checks for :meth:`OxenClient.download`: presigned URLs, not the API.

A presigned link that is refused (401/403/404/410) has most likely expired, so it gets
its own error the caller can answer by fetching the generation again.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from provider import errors as e
from provider.classify import classify_response

DOWNLOAD_CHUNK_BYTES = 64 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
EXPIRED_STATUSES = frozenset({401, 403, 404, 410})


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


def write_capped(response: httpx.Response, part: Path, max_bytes: int) -> int:
    """Stream the body into ``part`` chunk by chunk; ResultTooLarge past ``max_bytes``."""
    written = 0
    with part.open("wb") as out:
        for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
            written += len(chunk)
            if written > max_bytes:
                raise e.ResultTooLarge(
                    f"result exceeds the {max_bytes}-byte cap", max_bytes=max_bytes
                )
            out.write(chunk)
    if written == 0:
        raise e.MalformedResponse("result file is empty")
    return written
