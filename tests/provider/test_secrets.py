"""The API key never shows in an exception, its args, or the client's repr."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from provider import errors as e
from provider.client import OxenClient

KEY = "sk-LEAKCHECK-0123456789abcdef"


def public_dns(host: str) -> list[str]:
    return ["93.184.216.34"]


def echo_key(status: int, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    """A hostile server that echoes the Authorization header back in its error body."""

    def answer(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization", "none")
        body = {
            "error": {"type": "unknown_error", "title": auth, "detail": f"key={KEY} {auth}"},
            "status": "error",
            "status_message": auth,
        }
        return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)

    return answer


def boom(exc_type: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"failed with {request.headers['Authorization']}", request=request)

    return answer


CASES: list[tuple[Callable[[httpx.Request], httpx.Response], type[e.ProviderError]]] = [
    (echo_key(500), e.ServerError),
    (echo_key(429, **{"Retry-After": "1"}), e.RateLimited),
    (echo_key(400), e.InvalidRequest),
    (echo_key(403), e.Forbidden),
    (echo_key(404), e.NotFound),
    (echo_key(401), e.Unauthenticated),
    (echo_key(402), e.InsufficientCredits),
    (echo_key(200), e.ServerError),
    (echo_key(302), e.MalformedResponse),
    (lambda r: httpx.Response(200, content=f"<html>{KEY}</html>".encode()), e.MalformedResponse),
    (boom(httpx.ReadTimeout), e.ProviderTimeout),
    (boom(httpx.ConnectError), e.ProviderConnectionError),
    (boom(httpx.RemoteProtocolError), e.ProviderConnectionError),
    (boom(httpx.LocalProtocolError), e.InvalidRequest),
    (boom(httpx.DecodingError), e.MalformedResponse),  # type: ignore[arg-type]
]


def assert_clean(exc: BaseException, client: OxenClient) -> None:
    for text in (str(exc), repr(exc), repr(exc.args), repr(client), str(vars(exc))):
        assert KEY not in text
        assert "Bearer sk-" not in text


@pytest.mark.parametrize(("answer", "expected"), CASES)
@pytest.mark.parametrize(
    "call", ["get", "list", "enqueue", "cancel", "generate", "model", "billed", "history", "retry"]
)
def test_no_key_in_api_errors(
    answer: Callable[[httpx.Request], httpx.Response],
    expected: type[e.ProviderError],
    call: str,
) -> None:
    if call == "cancel" and answer is CASES[9][0]:
        pytest.skip("a cancel reads no body: any 2xx is taken")
    with OxenClient("https://hub.oxen.ai", KEY, transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(e.ProviderError) as info:
            if call == "get":
                client.get("g")
            elif call == "list":
                client.list()
            elif call == "enqueue":
                client.enqueue("m", {"prompt": KEY})
            elif call == "cancel":
                client.cancel("g")
            elif call == "generate":
                client.generate("m", {})
            elif call == "billed":
                client.billed("g")
            elif call == "history":
                client.history(model="m")
            elif call == "retry":
                client.retry("g")
            else:
                client.model("m")
        # An enqueue (or a retry) whose answer was lost is reported as such.
        assert isinstance(info.value, expected) or (
            call in ("enqueue", "retry") and isinstance(info.value, e.EnqueueOutcomeUnknown)
        )
        assert_clean(info.value, client)


@pytest.mark.parametrize("status", [401, 403, 404, 410, 500, 429])
def test_no_key_in_download_errors(status: int, tmp_path: Path) -> None:
    transport = httpx.MockTransport(echo_key(status))
    with OxenClient("https://hub.oxen.ai", KEY, transport=transport, resolve=public_dns) as client:
        with pytest.raises(e.ProviderError) as info:
            client.download(f"https://f.example/x?k={KEY[:3]}", tmp_path / "x", max_bytes=10)
        assert_clean(info.value, client)


@pytest.mark.parametrize(
    "location",
    [
        f"https://169.254.169.254/?k={KEY}",
        f"https://user:{KEY}@f.example/x",
        f"http://f.example/{KEY}",
        f"file:///{KEY}",
    ],
)
def test_no_key_in_refused_redirects(location: str, tmp_path: Path) -> None:
    """A hostile result host redirecting to a URL that carries the key: refused, and the
    error names the rule, never the URL."""
    transport = httpx.MockTransport(lambda r: httpx.Response(302, headers={"Location": location}))
    with OxenClient("https://hub.oxen.ai", KEY, transport=transport, resolve=public_dns) as client:
        with pytest.raises(e.RefusedUrl) as info:
            client.download("https://f.example/x", tmp_path / "x", max_bytes=10)
        assert_clean(info.value, client)


def test_events_fatal_has_no_key() -> None:
    with OxenClient("https://hub.oxen.ai", KEY, transport=httpx.MockTransport(echo_key(401))) as c:
        with pytest.raises(e.Unauthenticated) as info:
            next(c.events(reconnect_delay_s=0))
        assert_clean(info.value, c)


def test_every_error_class_constructed_is_clean() -> None:
    """Every class in the tree, forced through the client's paths above, plus direct ones."""
    forced = {cls for _, cls in CASES} | {
        e.GenerationFailed,
        e.ResultTooLarge,
        e.ResultUrlExpired,
        e.ResultWriteError,
        e.EnqueueOutcomeUnknown,
        e.RefusedUrl,
    }
    tree = {
        obj
        for obj in vars(e).values()
        if isinstance(obj, type) and issubclass(obj, e.ProviderError)
    }
    abstract = {e.ProviderError, e.TransientProviderError, e.PermanentJobError, e.RunFatalError}
    assert tree - abstract <= forced | {e.NotFound, e.Forbidden}


def test_client_repr_and_vars_hide_key() -> None:
    with OxenClient("https://hub.oxen.ai", KEY) as client:
        assert KEY not in repr(client) and KEY not in str(client)
        assert KEY not in repr(vars(client))
