"""The Oxen.ai inference API client (docs/provider-api.md), synchronous, on httpx.

One call, one answer: every failure is raised once as a classified
:mod:`provider.errors` exception and retrying is the pipeline's job. The API key
goes out only as the ``Authorization`` header of API calls, added per request so that
downloads from presigned URLs (another host) can never carry it. Downloads go through a
client of their own, guarded hop by hop (:mod:`provider.guard`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx
from httpx_sse import SSEError, connect_sse
from pydantic import SecretStr

from provider import errors as e
from provider.classify import classify_exception, classify_response
from provider.download import Deadline, check_download, deadline_transport, write_capped
from provider.guard import Resolver, guarded_client, resolve_host
from provider.models import (
    COMPLETED_EVENT,
    BilledGeneration,
    CompletionEvent,
    EnqueuedGeneration,
    EnqueueResponse,
    GeneratedVideos,
    Generation,
    GenerationList,
    GenerationPage,
    parse_json,
    parse_model,
)
from provider.protocol import DEFAULT_PAGE_SIZE
from provider.wire import (
    api_root,
    billed_path,
    completion,
    enqueue_body,
    filters_query,
    may_have_created,
    model_path,
    page_query,
    queue_path,
    unwrap,
)
from seedq.errors import ConfigError
from seedq.modelinfo import ModelInfo
from seedq.settings import DEFAULT_DOWNLOAD_DEADLINE_S, Settings

USER_AGENT = "seedq/0.1"
CONNECT_TIMEOUT_S = 5.0
# The synchronous endpoint blocks while the video renders: typically 5-15 minutes.
GENERATE_TIMEOUT_S = 20 * 60.0
# Keep-alives come every 15 s; three missed ones mean the stream is dead.
EVENTS_READ_TIMEOUT_S = 45.0


def backoff_delay_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Exponential reconnect delay for the events stream: base, 2·base, 4·base, ... ≤ max."""
    return min(max_s, base_s * 2.0 ** min(max(attempt, 0), 32))


class OxenClient:
    """Sync client of the Oxen.ai inference API; thread-safe like ``httpx.Client``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | SecretStr,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        generate_timeout_s: float = GENERATE_TIMEOUT_S,
        download_deadline_s: float = DEFAULT_DOWNLOAD_DEADLINE_S,
        max_connections: int = 10,
        transport: httpx.BaseTransport | None = None,
        allow_private_urls: bool = False,
        resolve: Resolver = resolve_host,
    ) -> None:
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.base_url = api_root(base_url)
        self.timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self.generate_timeout = httpx.Timeout(generate_timeout_s, connect=self.timeout.connect)
        self.download_deadline_s = download_deadline_s
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        # No default Authorization header: it is added per API call (see _auth).
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout,
            limits=limits,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        )
        # Result files: any host the provider names, so every hop is checked first;
        # every socket wait of a download is cut by its deadline.
        self._files = guarded_client(
            allow_private=allow_private_urls,
            timeout=self.timeout,
            transport=transport or deadline_transport(limits),
            resolve=resolve,
            headers={"User-Agent": USER_AGENT},
            limits=limits,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.BaseTransport | None = None
    ) -> OxenClient:
        if settings.oxen_api_key is None:
            raise ConfigError("OXEN_API_KEY is not set: the provider needs an API key")
        return cls(
            settings.provider_url,
            settings.oxen_api_key,
            timeout_s=settings.http_timeout_s,
            download_deadline_s=settings.download_deadline_s,
            transport=transport,
            allow_private_urls=settings.allow_private_urls,
        )

    def __repr__(self) -> str:
        return f"OxenClient(base_url={self.base_url!r}, calls={dict(self.calls)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._files.close()

    # -- plumbing -------------------------------------------------------------------

    def _count(self, endpoint: str) -> None:
        with self._calls_lock:
            self.calls[endpoint] += 1

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key.get_secret_value(),)

    def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """One API request; a classified ProviderError on any failure or error status."""
        self._count(endpoint)
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                params=params,
                headers=self._auth(),
                timeout=timeout or self.timeout,
            )
        except httpx.HTTPError as exc:
            raise classify_exception(exc, secrets=self._secrets()) from None
        problem = classify_response(
            response.status_code, response.headers, response.content, secrets=self._secrets()
        )
        if problem is not None:
            raise problem
        return response

    # -- API calls ------------------------------------------------------------------

    def enqueue(
        self,
        model: str,
        params: Mapping[str, Any],
        *,
        num_generations: int = 1,
        target_namespace: str | None = None,
    ) -> list[EnqueuedGeneration]:
        """``POST /api/ai/queue``: returns at once with the new generation ids.

        Raises EnqueueOutcomeUnknown when the request may have been applied but its
        answer was lost (read timeout, dropped connection, unreadable 2xx body).
        """
        body = enqueue_body(
            model, params, num_generations=num_generations, target_namespace=target_namespace
        )
        with may_have_created("enqueue"):
            response = self._call("enqueue", "POST", "/api/ai/queue", json=body)
            return parse_model(EnqueueResponse, parse_json(response.content)).generations

    def get(self, generation_id: str) -> Generation:
        """``GET /api/ai/queue/{id}``: status, result URL and echoed parameters."""
        response = self._call("get", "GET", queue_path(generation_id))
        return parse_model(Generation, parse_json(response.content))

    def list(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        namespace: str | None = None,
        media_type: str | None = None,
        repo: str | None = None,
        folder: str | None = None,
    ) -> GenerationList:
        """``GET /api/ai/queue``: active generations unless ``status`` is given."""
        query = filters_query(
            model=model,
            status=status,
            namespace=namespace,
            media_type=media_type,
            repo=repo,
            folder=folder,
        )
        response = self._call("list", "GET", "/api/ai/queue", params=query)
        return parse_model(GenerationList, parse_json(response.content))

    def billed(self, generation_id: str) -> BilledGeneration:
        """``GET /api/ai/generations/{id}``: the row with ``cost``, what was charged."""
        response = self._call("billed", "GET", billed_path(generation_id))
        return parse_model(BilledGeneration, unwrap(parse_json(response.content), "generation"))

    def history(
        self,
        *,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        model: str | None = None,
        status: str | None = None,
        media_type: str | None = None,
    ) -> GenerationPage:
        """``GET /api/ai/generations``: one page of the account's generations, newest
        first, each with its ``cost``; ``page_size`` is capped at the documented 1000."""
        query = page_query(page, page_size)
        query |= filters_query(model=model, status=status, media_type=media_type)
        response = self._call("history", "GET", "/api/ai/generations", params=query)
        return parse_model(GenerationPage, parse_json(response.content))

    def retry(self, generation_id: str) -> EnqueuedGeneration:
        """``POST /api/ai/queue/{id}/retry``: kill a generation and enqueue a fresh one
        with the same parameters (API 0.257); the new row names the old in
        ``retried_from_id``. Paid like an enqueue, so a lost answer raises
        EnqueueOutcomeUnknown: look for a row retried from ``generation_id`` first.
        """
        path = queue_path(generation_id) + "/retry"
        with may_have_created("retry"):
            response = self._call("retry", "POST", path)
            data = parse_json(response.content)
            if isinstance(data, dict) and isinstance(data.get("generations"), list):
                return parse_model(EnqueueResponse, data).generations[0]
            return parse_model(EnqueuedGeneration, unwrap(data, "generation"))

    def cancel(self, generation_id: str) -> None:
        """``DELETE /api/ai/queue/{id}``: cancel a queued or processing generation (a
        finished one is left as it is). Any 2xx means taken: the documented answer,
        ``{"status": "success", "generation_id": ...}``, says nothing of the new state,
        and older answers (the row, or no body) are read the same way; GET tells it."""
        self._call("cancel", "DELETE", queue_path(generation_id))

    def generate(
        self, model: str, params: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> GeneratedVideos:
        """``POST /api/ai/videos/generate``: blocks until the video exists (minutes)."""
        timeout = self.generate_timeout
        if timeout_s is not None:
            timeout = httpx.Timeout(timeout_s, connect=self.timeout.connect)
        response = self._call(
            "generate",
            "POST",
            "/api/ai/videos/generate",
            json={**params, "model": model},
            timeout=timeout,
        )
        return parse_model(GeneratedVideos, unwrap(parse_json(response.content), "generation"))

    def model(self, model_id: str) -> ModelInfo:
        """``GET /api/ai/models/{id}``: parameter schema and pricing."""
        response = self._call("model", "GET", model_path(model_id))
        return parse_model(ModelInfo, unwrap(parse_json(response.content), "model"))

    # -- completion events ----------------------------------------------------------

    def events(
        self,
        *,
        stop: threading.Event | None = None,
        reconnect_delay_s: float = 1.0,
        max_reconnect_delay_s: float = 30.0,
        read_timeout_s: float = EVENTS_READ_TIMEOUT_S,
    ) -> Iterator[CompletionEvent]:
        """Completion events from ``GET /api/events``, reconnecting until ``stop`` is set.

        Events that fire while disconnected are lost (no buffering upstream), so this is
        a hint stream beside polling. ``stop`` is checked between events and during the
        reconnect wait; an idle stream notices it within one keep-alive interval.
        Raises RunFatalError (401, no credits); every other failure reconnects.
        """
        stop = stop or threading.Event()
        timeout = httpx.Timeout(self.timeout.connect, read=read_timeout_s)
        attempt = 0
        while not stop.is_set():
            try:
                for event in self._event_stream(timeout, stop):
                    attempt = 0
                    if event is not None:
                        yield event
            except e.RunFatalError:
                raise
            except (e.ProviderError, httpx.HTTPError, SSEError):
                pass  # dropped or refused: wait and reconnect below
            if stop.is_set():
                return
            stop.wait(
                backoff_delay_s(attempt, base_s=reconnect_delay_s, max_s=max_reconnect_delay_s)
            )
            attempt += 1

    def _event_stream(
        self, timeout: httpx.Timeout, stop: threading.Event
    ) -> Iterator[CompletionEvent | None]:
        """One connection's events; None once connected, so the caller resets backoff."""
        self._count("events")
        with connect_sse(
            self._http, "GET", "/api/events", headers=self._auth(), timeout=timeout
        ) as source:
            response = source.response
            if response.status_code != 200:
                response.read()
                problem = classify_response(
                    response.status_code,
                    response.headers,
                    response.content,
                    secrets=self._secrets(),
                )
                raise problem or e.MalformedResponse("events: unexpected status")
            yield None
            for sse in source.iter_sse():
                if stop.is_set():
                    return
                if sse.event != COMPLETED_EVENT:
                    continue
                event = completion(sse.data)
                if event is not None:
                    yield event

    # -- result files ---------------------------------------------------------------

    def download(
        self, url: str, dest: Path, *, max_bytes: int, timeout_s: float | None = None
    ) -> int:
        """Stream a presigned result URL into ``dest``; the number of bytes written.

        Written to a sibling ``.part`` file and renamed, so ``dest`` is never half a
        video. Never sends the API key. Raises ResultUrlExpired (refresh via get()),
        ResultTooLarge above ``max_bytes``, RefusedUrl for a URL or redirect hop the
        guard refuses (:mod:`provider.guard`), or a transient error: ProviderTimeout
        too when the whole takes longer than ``download_deadline_s``.
        """
        if urlsplit(url).scheme not in ("http", "https"):
            raise e.InvalidRequest("result URL is not http(s)", error_type="invalid_result_url")
        self._count("download")
        part = dest.with_name(f".{dest.name}.part")
        deadline = Deadline.start(self.download_deadline_s)
        timeout = self.timeout if timeout_s is None else httpx.Timeout(timeout_s)
        try:
            # Another client than the API's: no base URL, no auth header, ever.
            with (
                deadline.applied(),
                self._files.stream("GET", url, timeout=deadline.timeout(timeout)) as response,
            ):
                check_download(response, max_bytes, self._secrets())
                written = write_capped(response, part, max_bytes, deadline)
            os.replace(part, dest)
            return written
        except BaseException as exc:
            with contextlib.suppress(OSError):
                part.unlink()
            if isinstance(exc, e.ProviderError):
                raise
            if isinstance(exc, httpx.TimeoutException):
                deadline.check()  # a wait cut short by the deadline: name the deadline
            if isinstance(exc, httpx.HTTPError | OSError):
                raise classify_exception(exc, secrets=self._secrets()) from None
            raise
