"""Presigned-style result URLs: ``/_files/{id}.mp4?expires=<unix>&sig=<hmac>``.

They need no bearer header (real presigned links live on another host and a client
must not send its key there). A link is valid until ``expires``; a new GET of the
generation mints a fresh one. Pure functions; the route lives in :mod:`simulator.app`.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum
from urllib.parse import urlencode

FILES_PREFIX = "/_files/"


class LinkCheck(Enum):
    OK = "ok"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad_signature"


def signature(secret: bytes, generation_id: str, expires: str) -> str:
    return hmac.new(secret, f"{generation_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def result_url(base_url: str, secret: bytes, generation_id: str, expires_at: float) -> str:
    """A link valid until ``expires_at`` (Unix seconds, millisecond precision so that
    sub-second TTLs work in tests)."""
    expires = f"{expires_at:.3f}"
    query = urlencode({"expires": expires, "sig": signature(secret, generation_id, expires)})
    return f"{base_url.rstrip('/')}{FILES_PREFIX}{generation_id}.mp4?{query}"


def check_link(secret: bytes, generation_id: str, expires: str, sig: str, now: float) -> LinkCheck:
    """Whether a link is genuine and still valid at ``now``; forged beats expired."""
    if not hmac.compare_digest(signature(secret, generation_id, expires), sig):
        return LinkCheck.BAD_SIGNATURE
    try:
        expires_at = float(expires)
    except ValueError:
        return LinkCheck.BAD_SIGNATURE
    return LinkCheck.OK if now < expires_at else LinkCheck.EXPIRED
