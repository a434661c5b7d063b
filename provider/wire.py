"""What goes over the wire to the Oxen.ai inference API (docs/provider-api.md), with no
I/O: the paths, the request bodies and queries each call sends, the unwrapping of
answers whose object comes wrapped (``{"generation": {...}}``) or not, as both are seen,
and what a lost answer to a paid call means. ``provider.client`` makes the calls."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from provider import errors as e
from provider.models import CompletionEvent, parse_json, parse_model
from provider.protocol import MAX_PAGE_SIZE

# Exceptions raised after the request bytes may have reached the server.
_SENT_MAYBE = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def api_root(base_url: str) -> str:
    """``https://hub.oxen.ai`` from either it or ``https://hub.oxen.ai/api`` (both seen)."""
    root = base_url.rstrip("/")
    return root.removesuffix("/api")


def checked_id(generation_id: str) -> str:
    if not generation_id.strip():
        raise e.InvalidRequest("empty generation id", error_type="invalid_params")
    return generation_id


def queue_path(generation_id: str) -> str:
    return f"/api/ai/queue/{quote(checked_id(generation_id), safe='')}"


def billed_path(generation_id: str) -> str:
    return f"/api/ai/generations/{quote(checked_id(generation_id), safe='')}"


def model_path(model_id: str) -> str:
    return f"/api/ai/models/{quote(model_id, safe='')}"


def enqueue_body(
    model: str,
    params: Mapping[str, Any],
    *,
    num_generations: int = 1,
    target_namespace: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /api/ai/queue``: the model's parameters and the model, with
    the count and the namespace only when they are not the defaults."""
    body: dict[str, Any] = {**params, "model": model}
    if num_generations != 1:
        body["num_generations"] = num_generations
    if target_namespace is not None:
        body["target_namespace"] = target_namespace
    return body


def filters_query(**filters: str | None) -> dict[str, str]:
    """The query of the given filters; None leaves a filter out."""
    return {k: v for k, v in filters.items() if v is not None}


def page_query(page: int, page_size: int) -> dict[str, str]:
    """``page`` from 1, ``page_size`` from 1 to the documented 1000."""
    return {
        "page": str(max(1, page)),
        "page_size": str(min(max(1, page_size), MAX_PAGE_SIZE)),
    }


def unwrap(data: Any, key: str) -> Any:
    """``data[key]`` when the object is wrapped (``{"model": {...}}``), else ``data``."""
    if isinstance(data, dict):
        inner = data.get(key) or data.get("data")
        if isinstance(inner, dict) and "id" not in data and "generation_id" not in data:
            return inner
        generations = data.get("generations")
        if isinstance(generations, list) and len(generations) == 1 and "generation_id" not in data:
            return generations[0]
    return data


def completion(data: str) -> CompletionEvent | None:
    """The event in one ``data:`` payload, or None for a malformed one (skipped)."""
    try:
        return parse_model(CompletionEvent, parse_json(data.encode()))
    except e.MalformedResponse:
        return None


@contextlib.contextmanager
def may_have_created(what: str) -> Iterator[None]:
    """Around a call that creates a paid generation (an enqueue, a retry): an answer lost
    after the request may have reached the server (read timeout, dropped connection,
    unreadable 2xx body) is EnqueueOutcomeUnknown, so the caller looks before it sends
    again; a failure before anything was sent stays what it was."""
    try:
        yield
    except (e.ProviderTimeout, e.ProviderConnectionError, e.MalformedResponse) as exc:
        if isinstance(exc, e.MalformedResponse) or isinstance(exc.__context__, _SENT_MAYBE):
            raise e.EnqueueOutcomeUnknown(
                f"{what} outcome unknown, list before retrying: {exc.message}",
                status_code=exc.status_code,
                error_type=exc.error_type,
            ) from None
        raise
