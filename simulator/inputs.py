"""The input images of a generation: the content filter (pure) and the fetch (httpx).

The simulator fetches from any host, loopback included, because tests serve their
images on 127.0.0.1; the real service's rules about hosts are not documented.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from simulator.errors import GenerationFailed

MAX_IMAGE_BYTES = 30 * 1024 * 1024
FETCH_TIMEOUT_S = 20.0
IMAGE_FIELDS = (
    ("input_image", "input_image_has_face"),
    ("tail_image_url", "tail_image_url_has_face"),
)


def content_filter_reason(params: dict[str, Any]) -> str | None:
    """Why the content filter blocks these parameters, or None.

    The simulated filter "sees" a face in any image whose URL path contains ``face``;
    declaring it with the ``*_has_face`` flag lets it through, as documented.
    """
    for field, flag in IMAGE_FIELDS:
        url = params.get(field)
        if (
            isinstance(url, str)
            and "face" in urlsplit(url).path.lower()
            and params.get(flag) is not True
        ):
            return (
                f"Blocked by content filter: {field} appears to show a real human face; "
                f"set {flag} to true if it does"
            )
    return None


async def fetch_image(client: httpx.AsyncClient, url: str, field: str) -> bytes:
    """The bytes at ``url``; any failure is a :class:`GenerationFailed` naming the field."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise GenerationFailed(f"could not fetch {field}: only http and https URLs are supported")
    try:
        async with client.stream("GET", url, timeout=FETCH_TIMEOUT_S) as response:
            if response.status_code != 200:
                raise GenerationFailed(f"could not fetch {field}: HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise GenerationFailed(f"{field} is larger than 30 MB")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise GenerationFailed(f"could not fetch {field}: {type(exc).__name__}") from None
    return b"".join(chunks)
